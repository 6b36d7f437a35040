"""The audit report of a tiny-model run in a real (headless) chromium: the verdict on the first screen, the
pictures drawn, and a print rendering at A4 width where no table or figure is cut. Saves test-artifacts/
report-top.png, report-print.png (first page, print media) and report.pdf (A4)."""

import re
import shutil
from pathlib import Path

import pytest

from grin_ui.cli import main

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
        "--no-first-run", "--disable-component-update", "--disable-sync"]
SCREEN = {"width": 1280, "height": 900}
A4 = {"width": 794, "height": 1123}  # 210 × 297 mm at 96 px per inch
A4_TEXT_WIDTH = 710  # 210 mm minus the print stylesheet's 2 × 11 mm margins

OVERFLOW_JS = """() => { const w = document.documentElement.clientWidth; const out = [];
  for (const el of document.querySelectorAll('table, figure, svg, pre, .overall')) {
    const r = el.getBoundingClientRect(); if (r.width > 0 && r.right > w + 1)
      out.push(el.tagName + ' in #' + ((el.closest('section') || {}).id || '?') + ': ' + Math.round(r.right)); }
  return out; }"""


@pytest.fixture(scope="module")
def report_html(tiny_dir, tmp_path_factory) -> Path:
    from tests.test_journey import data_files

    tmp = tmp_path_factory.mktemp("report-run")
    out = tmp / "out"
    assert main(["run", "--model", tiny_dir, *data_files(tmp), "--out", str(out), "--sparsity", "0.1", "--steps",
                 "40", "--lr", "5e-3", "--probes", "nf4,rtn4", "--seed", "1"]) == 0
    return out / "report.html"


def test_report_in_a_browser(report_html):
    from playwright import sync_api as playwright

    if not shutil.which(CHROMIUM):
        pytest.fail("Debian's chromium is not installed at /usr/bin/chromium (./dev.sh test installs it)")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport=SCREEN)
        page.goto(report_html.as_uri())

        # the first screen answers the question: headline, overall status and all six verdict lines with a badge
        assert page.locator(".overall .headline").inner_text().split()[0] in ("Yes", "Partly", "No", "Only")
        rows = page.locator("tr.vline")
        assert rows.count() == 6
        for i in range(6):
            box = rows.nth(i).locator(".badge").bounding_box()
            assert box is not None and box["y"] + box["height"] <= SCREEN["height"], f"verdict line {i} off screen"
        page.screenshot(path=str(ARTIFACTS / "report-top.png"))

        # every picture is drawn at a readable size
        charts = page.locator("svg.chart")
        assert charts.count() >= 12
        for i in range(charts.count()):
            box = charts.nth(i).bounding_box()
            assert box["width"] >= 300 and box["height"] >= 40, (i, box)

        # print: A4 width, sections start on a new page, nothing wider than the page
        page.emulate_media(media="print")
        page.set_viewport_size({"width": A4_TEXT_WIDTH, "height": A4["height"]})
        assert page.evaluate(OVERFLOW_JS) == []
        assert page.evaluate("getComputedStyle(document.querySelector('section#compare')).breakBefore") == "page"
        assert page.evaluate("getComputedStyle(document.querySelector('nav.toc')).display") == "none"
        page.set_viewport_size(A4)
        page.screenshot(path=str(ARTIFACTS / "report-print.png"))
        pdf = page.pdf(path=str(ARTIFACTS / "report.pdf"), format="A4", print_background=True)
        assert pdf[:5] == b"%PDF-" and len(re.findall(rb"/Type\s*/Page(?!s)", pdf)) >= 8  # a page per section
        browser.close()
