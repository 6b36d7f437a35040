"""A first visitor in a real (headless) chromium: the page opens with the model and an example loaded, and the
journey runs by pressing the main button of each tab, on the tiny model. Screenshots go to test-artifacts/."""

import shutil
import time
import socket
from pathlib import Path

import psutil
import pytest

from grin_ui import session as S
from grin_ui.ui.app import build_app, launch_options, queued

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
        "--no-first-run", "--disable-component-update", "--disable-sync"]
LONG = 240_000  # ms: CPU work on a shared machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def store(tiny_dir):
    return S.SessionStore(default_model=tiny_dir)


@pytest.fixture(scope="module")
def url(tiny_dir, store):
    demo = build_app(tiny_dir, store)
    port = free_port()
    queued(demo).launch(server_name="127.0.0.1", server_port=port,
                        prevent_thread_lock=True, quiet=True, **launch_options())
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def page(url):
    from playwright import sync_api as playwright

    if not shutil.which(CHROMIUM):
        pytest.fail("Debian's chromium is not installed at /usr/bin/chromium (./dev.sh test installs it)")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.goto(url)
        yield pg
        browser.close()


def shot(page, name: str) -> None:
    page.wait_for_timeout(600)  # let plots finish drawing
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def tab(page, title: str) -> None:
    page.get_by_role("tab", name=title).click()


def wait_text(page, text: str, timeout: int = LONG):
    loc = page.get_by_text(text).first
    loc.wait_for(state="visible", timeout=timeout)
    return loc


def wait_until(check, timeout_s: float = LONG / 1000):
    deadline = time.time() + timeout_s
    while not check():
        assert time.time() < deadline, "timed out"
        time.sleep(0.5)


def test_first_visit_journey(page):
    # 1 · the model card is filled on load
    wait_text(page, "LlamaForCausalLM", 120_000)
    assert page.get_by_role("tab", name="8 · Report").is_visible()
    shot(page, "01-model")

    # 2 · the preselected example is loaded; bad pasted data gives a readable toast and keeps the example
    tab(page, "2 · Data")
    info = wait_text(page, "forget examples")
    before = info.inner_text()
    page.get_by_text("Replace the forget set").click()
    page.get_by_label("Paste forget examples").fill('{"question": "a", "answer": "b"}\n{broken')
    page.get_by_role("button", name="Use pasted text as the forget set").click()
    wait_text(page, "invalid JSON on line 2", 30_000)
    shot(page, "02-data-error")
    assert page.get_by_text("forget examples").first.inner_text() == before

    # 3 · knowledge check
    tab(page, "3 · Teach")
    page.get_by_role("button", name="Check what the model knows").click()
    wait_text(page, "Original model —")
    shot(page, "03-teach")

    # 4 · influence map, then an instant scope change
    tab(page, "4 · Influence map")
    page.get_by_role("button", name="Compute influence scores").click()
    wait_text(page, "scored weights selected")
    shot(page, "04-influence")
    page.locator(".js-plotly-plot").nth(2).wait_for(timeout=30_000)
    page.get_by_role("radio", name="tensor").check()
    wait_text(page, "top p of each weight matrix", 30_000)

    # 5 · unlearn with the defaults, recording the dynamics: their three views appear under the loss curves
    tab(page, "5 · Unlearn")
    page.get_by_label("Record dynamics every N steps (0 = off)").fill("2")
    page.get_by_role("button", name="Run unlearning").click()
    wait_text(page, "Done.")
    wait_text(page, "Dynamics: forget at the holdout level", 30_000)
    for title in ("Per-example answer log-probability over the steps", "Trade-off over the steps",
                  "Steps to forget vs memorization (one point per forget example)"):
        wait_text(page, title, 30_000)
    shot(page, "05-unlearn")

    # 6 · compare
    tab(page, "6 · Compare")
    page.get_by_label("Include utility (perplexity, multiple choice)").uncheck()
    page.get_by_role("button", name="Evaluate original vs unlearned").click()
    wait_text(page, "Forget set (")
    assert page.locator("table.gen-table tr").count() > 2
    shot(page, "06-compare")

    # 7 · quantization probe (NF4 preselected)
    tab(page, "7 · Quantization probe")
    page.get_by_role("button", name="Run the probe").click()
    recovered = page.get_by_role("grid", name="Recovery of forgotten knowledge")
    wait_until(lambda: "nf4" in recovered.inner_text())
    shot(page, "07-probe")

    # 8 · report
    tab(page, "8 · Report")
    page.get_by_role("button", name="Build the report and the delta").click()
    wait_text(page, "report.html")
    shot(page, "08-report")


def test_closing_the_page_frees_the_session_and_the_server_idles(page, store):
    """Once the visitor of the journey above closes the page, its session goes (gradio's unload event) and the
    server is idle: nothing of ours keeps running (gradio's own polling, slowed down by grin_ui.ui.app.queued, costs
    about 1 % of a core here)."""
    assert len(store) == 1
    page.close()
    wait_until(lambda: len(store) == 0, 60)
    proc = psutil.Process()
    time.sleep(1.0)
    t = proc.cpu_times()
    time.sleep(4.0)
    t2 = proc.cpu_times()
    used = (t2.user - t.user) + (t2.system - t.system)
    assert used < 0.2, f"the server used {used:.2f} s of CPU in 4 s after the page was closed"
