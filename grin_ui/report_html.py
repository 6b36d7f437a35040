"""report.html: the audit report rendered from report.json alone — verdict first, every figure, pictures, print-ready.

    html = render(report)            # grin_ui.report.render_html calls this; `grin-ui report --from` re-renders

The page: the verdict (grin_ui.verdict; the stored ``verdict`` of the report, or computed with the default
thresholds for a report that has none), then one section per dashboard tab — data, influence map and mask,
unlearning and stopping, compare (with fluency and the answers side by side), membership inference, utility,
SemEval-style, quantization probes, survival, relearning — and the reproducibility block. Every figure carries its
report key and its one-line definition (grin_ui.definitions). Pictures are static SVG (grin_ui.svgplot): no script,
no external resource, a few hundred kB for the bundled model. Output is a pure function of the report: rendering
the same JSON twice gives the same bytes. A print stylesheet starts each section on a new page and keeps tables,
rows and figures whole.
"""

from __future__ import annotations

import re

from grin_ui.definitions import GROUPS
from grin_ui.report_format import esc, fmt, section
from grin_ui.report_sections import compare_section, data_section, influence_section, mia_section, other_figures, \
    probes_section, relearn_section, repro_section, semeval_section, survival_section, unlearning_section, \
    utility_section, verdict_block


# ---------------------------------------------------------------------------------------------- the page


STYLE = """
:root{--pass:#1a7f37;--pass-bg:#dafbe1;--concern:#9a6700;--concern-bg:#fff8c5;--fail:#cf222e;--fail-bg:#ffebe9;
--nm:#57606a;--nm-bg:#eaeef2}
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1120px;margin:1.2em auto;padding:0 1em;
color:#1f2328;line-height:1.4;font-size:14px}
header h1{margin:0 0 .1em;font-size:24px}header .meta{color:#57606a;font-size:13px}
h2{font-size:19px;border-bottom:2px solid #d0d7de;padding-bottom:.2em;margin-top:1.6em}
h3{font-size:15px;margin:1.2em 0 .4em}
table{border-collapse:collapse;margin:.4em 0 1.2em;max-width:100%}td,th{border:1px solid #d0d7de;padding:3px 7px;
text-align:left;vertical-align:top;font-size:13px}th{background:#f6f8fa}
table.metrics td:not(:first-child),table.compact td{font-variant-numeric:tabular-nums}
td .def{color:#57606a;font-size:11.5px;max-width:340px}.mname{font-weight:600}code{font-size:11.5px;color:#6e7781}
code.hash{color:#1f2328;word-break:break-all}.tag{font-size:10px;color:#8250df}
table.gens td{font-size:12px;max-width:260px}table.data td{word-break:break-word}
pre{background:#f6f8fa;padding:.7em;white-space:pre-wrap;word-break:break-word;font-size:12px}
pre.cmd{background:#0d1117;color:#e6edf3;font-size:12.5px}
figure{margin:.6em 0 1.2em}figure svg{max-width:100%;height:auto;display:block}
figcaption{font-size:12px;color:#57606a;max-width:720px}
.figs.two{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:0 1.2em}
.what{color:#57606a;margin-top:-.3em}.small{font-size:12px;color:#57606a}.nm{color:#57606a;font-style:italic}
ul.defs{font-size:12px;color:#57606a;margin-top:-.6em}
.badge{display:inline-block;font-weight:700;font-size:11.5px;padding:1px 7px;border-radius:10px;white-space:nowrap}
.st-pass{color:var(--pass);background:var(--pass-bg)}.st-concern{color:var(--concern);background:var(--concern-bg)}
.st-fail{color:var(--fail);background:var(--fail-bg)}.st-not-measured{color:var(--nm);background:var(--nm-bg)}
.dot{display:inline-block;width:.65em;height:.65em;border-radius:50%;margin-right:.4em;border:1px solid currentColor}
.dot.st-pass{background:var(--pass)}.dot.st-concern{background:#d4a72c}.dot.st-fail{background:var(--fail)}
.dot.st-not-measured{background:#fff}
.overall{border-radius:8px;padding:.7em 1em;margin:.4em 0 .8em;border:1px solid #d0d7de}
.overall .ask{font-size:13px;color:#57606a}.overall .headline{font-size:18px;font-weight:650;margin:.15em 0 .3em}
.st-bg-pass{background:#f0fff4;border-color:#4ac26b}.st-bg-concern{background:#fffbe6;border-color:#d4a72c}
.st-bg-fail{background:#fff5f5;border-color:#ff8182}.st-bg-not-measured{background:#f6f8fa}
#verdict h2{margin-top:.6em}
table.verdict-table{width:100%}table.verdict-table td{font-size:13px}td.q{font-weight:650;width:15%}
td.rule{font-size:11.5px;color:#57606a;width:27%}.answer{font-weight:500}ul.items{margin:.2em 0 0;padding-left:1em;
font-size:12px;color:#424a53;list-style:none}ul.items li{text-indent:-1em;padding-left:0}
nav.toc{font-size:13px;margin:.4em 0 1em}
.chunks{display:flex;flex-wrap:wrap;gap:0 1.2em;align-items:flex-start}nav.toc a{margin-right:.9em;white-space:nowrap}
@page{margin:13mm 11mm}
@media print{
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}
body{max-width:none;margin:0;padding:0;font-size:10pt}nav.toc{display:none}
section.group{break-before:page}h2,h3{break-after:avoid}
table{break-inside:auto;width:100%}tr,figure,.overall,pre.cmd{break-inside:avoid}thead{display:table-header-group}
table td,table th,table.verdict-table td{font-size:8pt;padding:2px 4px}
td .def,code,table.verdict-table td.rule,ul.items{font-size:7.5pt}.overall .headline{font-size:13pt}
table.gens td{max-width:none}td .def{max-width:none}
figure svg{max-width:100%;max-height:235mm;width:auto;height:auto}
.figs.two{display:block}.figs.two figure{display:inline-block;width:49%;vertical-align:top}
pre{font-size:7.5pt}a{color:inherit;text-decoration:none}
}
"""


ROOT = "grin-report"  # every rule of STYLE is scoped to this class: the page can be embedded (dashboard preview)


def scoped(css: str, root: str = "." + ROOT) -> str:
    """Prefix every selector of ``css`` with ``root`` (``body`` and ``:root`` become ``root`` itself), inside
    @media blocks too; @page rules stay as they are."""
    def fix(m: re.Match) -> str:
        sel, body = m.group(1).strip(), m.group(2)
        if sel.startswith("@"):
            return m.group(0)
        out = []
        for part in (x.strip() for x in sel.split(",")):
            out.append(root if part in ("body", ":root") else f"{root},{root} *" if part == "*" else f"{root} {part}")
        return ",".join(out) + "{" + body + "}"
    return re.sub(r"([^{}]+)\{([^{}]*)\}", fix, css)


def render(rep: dict, relearn_section_fn=None) -> str:
    """The whole page. ``relearn_section_fn(rep) -> str``: a replacement for the relearning section's body."""
    m = rep.get("model") or {}
    sections = [("data", data_section), ("influence", influence_section), ("unlearning", unlearning_section),
                ("compare", compare_section), ("mia", mia_section), ("utility", utility_section),
                ("semeval", semeval_section), ("probes", probes_section), ("survival", survival_section),
                ("relearn", lambda r: relearn_section(r, relearn_section_fn)), ("reproducibility", repro_section)]
    body = [f"<header><h1>grin-ui audit report</h1><div class='meta'>Model <b>{esc(m.get('name', '?'))}</b> "
            f"({esc(m.get('architecture', ''))}, {fmt(m.get('parameters'))} parameters) · objective "
            f"{fmt(((rep.get('config') or {}).get('unlearn') or {}).get('objective'))} · selector "
            f"{fmt((rep.get('mask') or {}).get('selector'))} · seed {fmt(rep.get('seed'))} · created "
            f"{fmt(rep.get('created'))} · report format v{fmt(rep.get('grin_ui_report'))}</div></header>",
            verdict_block(rep),
            "<nav class='toc'>" + " ".join(f"<a href='#{g}'>{i} · {esc(GROUPS[g][0])}</a>"
                                          for i, (g, _) in enumerate(sections, 1)) + "</nav>"]
    body += [section(g, fn(rep), i) for i, (g, fn) in enumerate(sections, 1)]
    other = other_figures(rep)
    if other:
        body.append(f"<section class='group' id='other'><h2>Other figures</h2>{other}</section>")
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
            "content='width=device-width,initial-scale=1'><title>grin-ui audit report</title>"
            f"<style>{scoped(STYLE)}</style></head><body><div class='{ROOT}'>{''.join(body)}</div></body></html>")
