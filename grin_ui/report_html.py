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

import html
import json
import math
import re

from grin_ui import svgplot as G
from grin_ui.definitions import GROUPS, define
from grin_ui.verdict import NOT_MEASURED, compute_verdict

SET_ORDER = ("forget", "retain", "neighbours", "holdout")
SET_METRIC_ORDER = ("n", "answer_hit_rate", "rougeL_recall", "answer_prob", "nll", "truth_ratio", "truth_ratio_kind",
                    "truth_ratio_n")
FLUENCY_ORDER = ("ends_rate", "loop_rate", "gibberish_rate", "gibberish_nll", "gibberish_threshold")
STATE_GROUPS = ("mia", "utility", "semeval")
LABELS = {"answer_hit_rate": "answer hit rate", "rougeL_recall": "ROUGE-L recall", "answer_prob": "answer probability",
          "nll": "NLL", "truth_ratio": "truth ratio", "ends_rate": "ends before the limit",
          "loop_rate": "repetition loops", "gibberish_rate": "gibberish (word salad)", "loss_auc": "LOSS AUC",
          "zlib_auc": "ZLib AUC", "mink_auc": "Min-K % AUC", "minkpp_auc": "Min-K %++ AUC", "score": "MIA score",
          "perplexity": "perplexity", "mc_accuracy": "multiple-choice accuracy", "aggregate": "aggregate",
          "final": "final score"}
STATE_COLORS = ["#4c78a8", "#e45756", "#f58518", "#72b7b2", "#54a24b", "#b279a2", "#9d755d", "#bab0ac"]
STATUS_TEXT = {"pass": "PASS", "concern": "CONCERN", "fail": "FAIL", NOT_MEASURED: "NOT MEASURED"}
HANDLED_TOP = {"grin_ui_report", "created", "config", "seed", "model", "data", "mask", "eval", "recovery", "survival",
               "history", "stopping", "timings", "rerun", "versions", "notes", "verdict", "files", "relearn"}


# ---------------------------------------------------------------------------------------------- small pieces


def esc(s) -> str:
    return html.escape(str(s), quote=True)


def fmt(v) -> str:
    """A value for a table cell: — for None, 4 significant digits for floats, yes/no for booleans."""
    if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list) and not v:
        return "—"
    if isinstance(v, list):
        return esc(", ".join(str(x) for x in v)) if all(not isinstance(x, (dict, list)) for x in v) else \
            esc(json.dumps(v))
    if isinstance(v, dict):
        return esc(json.dumps(v))
    return esc(v)


def pct(v, digits: int = 0) -> str:
    return "—" if not isinstance(v, (int, float)) or isinstance(v, bool) else f"{100 * v:.{digits}f} %"


def table(headers: list[str], rows: list[list], cls: str = "", raw: bool = False) -> str:
    """An HTML table; cells are formatted with :func:`fmt` unless ``raw`` (cells already HTML)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c if raw else fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def chunked_table(headers: list[str], rows: list[list], per: int = 25) -> str:
    """A long table of short rows as several side-by-side tables of at most ``per`` rows (each with the header).
    Column names are shown with spaces so that a wide header can wrap on a printed page."""
    headers = [h.replace("_", " ") for h in headers]
    if len(rows) <= per:
        return table(headers, rows, "compact")
    n = math.ceil(len(rows) / per)
    size = math.ceil(len(rows) / n)
    return "<div class='chunks'>" + "".join(table(headers, rows[i:i + size], "compact")
                                            for i in range(0, len(rows), size)) + "</div>"


def metric_cell(key: str, group: str | None = None) -> str:
    """The first cell of a figure's row: its name, its report key and its one-line definition."""
    label = LABELS.get(key, key.replace("_", " "))
    d = define(key, group)
    return (f"<span class='mname'>{esc(label)}</span> <code>{esc(key)}</code>"
            + (f"<div class='def'>{esc(d)}</div>" if d else ""))


def figure(svg: str, caption: str = "") -> str:
    return f"<figure>{svg}" + (f"<figcaption>{esc(caption)}</figcaption>" if caption else "") + "</figure>"


def section(gid: str, body: str, number: int) -> str:
    title, what = GROUPS[gid]
    return (f"<section class='group' id='{gid}'><h2>{number} · {esc(title)}</h2><p class='what'>{esc(what)}</p>"
            f"{body}</section>")


def scalar_rows(d: dict, group: str, skip=()) -> list[list[str]]:
    """[definition cell, value] for every non-nested entry of ``d``."""
    return [[metric_cell(k, group), fmt(v)] for k, v in d.items()
            if k not in skip and not isinstance(v, dict) and not (isinstance(v, list) and v and
                                                                     isinstance(v[0], (list, dict)))]


def _sets(ev: dict) -> list[str]:
    return [s for s in SET_ORDER if isinstance(ev.get(s), dict)] + \
        [s for s, v in ev.items() if s not in SET_ORDER and isinstance(v, dict) and "answer_hit_rate" in v]


def _keys(dicts, order, lists: bool = False) -> list[str]:
    """Keys of the plain values of ``dicts`` (lists too with ``lists``), ``order`` first, then as first seen."""
    seen = list(order)
    for d in dicts:
        for k, v in d.items():
            if k not in seen and k != "examples" and not isinstance(v, dict) and (lists or not isinstance(v, list)):
                seen.append(k)
    return [k for k in seen if any(k in d for d in dicts)]


def set_metrics_table(columns: list[tuple[str, str, dict]]) -> str:
    """Rows: every per-set metric (and fluency figure) present; columns: (set, state label, state eval) pairs."""
    sets = list(dict.fromkeys(s for s, _, _ in columns))
    per = [(s, label, ev.get(s) or {}) for s, label, ev in columns]
    keys = _keys([m for _, _, m in per], SET_METRIC_ORDER, lists=True)
    nested = list(dict.fromkeys(["fluency"] + [k for _, _, m in per for k, v in m.items() if isinstance(v, dict)]))
    head = "<tr><th rowspan='2'>figure</th>" + "".join(
        f"<th colspan='{sum(1 for s2, _, _ in per if s2 == s)}' class='set-{s}'>{esc(s)}</th>" for s in sets) + \
        "</tr><tr>" + "".join(f"<th>{esc(label)}</th>" for _, label, _ in per) + "</tr>"
    rows = [f"<tr><td>{metric_cell(k)}</td>" + "".join(f"<td>{fmt(m.get(k))}</td>" for _, _, m in per) + "</tr>"
            for k in keys]
    for g in nested:  # fluency, and any later block of figures per set
        sub = _keys([m.get(g) or {} for _, _, m in per], FLUENCY_ORDER if g == "fluency" else (), lists=True)
        rows += [f"<tr><td>{metric_cell(k, g)} <span class='tag'>{esc(g)}</span></td>" + "".join(
            f"<td>{fmt((m.get(g) or {}).get(k))}</td>" for _, _, m in per) + "</tr>" for k in sub]
    return f"<table class='metrics'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def group_table(group: str, states: list[tuple[str, dict]]) -> str:
    """Rows: every figure of ``group`` (mia, utility, semeval, ...) present in any state; columns: the states."""
    present = [(label, ev[group]) for label, ev in states if isinstance(ev.get(group), dict)]
    if not present:
        return ""
    keys = list(dict.fromkeys(k for _, g in present for k in g))  # every figure, nested ones as JSON
    rows = [[metric_cell(k, group)] + [fmt(g.get(k)) for _, g in present] for k in keys]
    return table(["figure", *[label for label, _ in present]], rows, "metrics", raw=True)


def _states(rep: dict) -> list[tuple[str, dict]]:
    ev = rep.get("eval") or {}
    out = [(k, ev[k]) for k in ("original", "unlearned") if isinstance(ev.get(k), dict)]
    for probe, res in (ev.get("probes") or {}).items():
        for which in ("original", "unlearned"):
            if isinstance(res.get(which), dict):
                out.append((f"{probe} · {which}", res[which]))
    return out


# ---------------------------------------------------------------------------------------------- verdict


def verdict_block(rep: dict) -> str:
    v = rep.get("verdict") if isinstance(rep.get("verdict"), dict) else compute_verdict(rep)
    status = v.get("status", NOT_MEASURED)
    rows = []
    for ln in v.get("lines", []):
        shown = ln.get("items", []) if len(ln.get("items", [])) > 1 else []  # one item: the answer says it all
        items = "".join(f"<li><span class='dot st-{esc(i['status']).replace(' ', '-')}'></span>{esc(i['label'])}: "
                        f"{esc(i['text'])}</li>" for i in shown)
        rows.append(f"<tr class='vline'><td class='q'>{esc(ln['question'])}</td><td>{badge(ln['status'])}</td>"
                    f"<td><div class='answer'>{esc(ln['answer'])}</div><ul class='items'>{items}</ul></td>"
                    f"<td class='rule'>{esc(ln['rule'])}</td></tr>")
    recorded = "recorded in report.json (verdict.thresholds)" if isinstance(rep.get("verdict"), dict) else \
        "the defaults (this report recorded no verdict)"
    return (f"<section id='verdict' class='verdict'><h2>Verdict</h2>"
            f"<div class='overall st-bg-{esc(status).replace(' ', '-')}'><div class='ask'>Is it really gone — even "
            f"after quantization?</div><div class='headline'>{esc(v.get('headline', ''))}</div>"
            f"<div class='sum'>Overall {badge(status)} {esc(v.get('summary', ''))}</div></div>"
            "<table class='verdict-table'><thead><tr><th>check</th><th>result</th><th>what the numbers say</th>"
            f"<th>rule (thresholds)</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f"<p class='small'>Every line is judged by the thresholds written next to it — {recorded}; change them "
            "with <code>grin_ui.verdict.Thresholds</code>. A line whose inputs the run did not produce says "
            "NOT MEASURED, never pass. Rates are shares of the set's questions; the figures behind each line are in "
            "the sections below.</p></section>")


def badge(status: str) -> str:
    return f"<span class='badge st-{esc(status).replace(' ', '-')}'>{STATUS_TEXT.get(status, esc(status))}</span>"


# ---------------------------------------------------------------------------------------------- sections


def data_section(rep: dict) -> str:
    m = rep.get("model") or {}
    body = "<h3>Model</h3>" + table(["field", "value"], [[k, v] for k, v in m.items()], "kv")
    rows = []
    for name, d in (rep.get("data") or {}).items():
        warn = "; ".join(d.get("warnings") or []) or "none"
        rows.append([esc(name), fmt(d.get("n")), fmt(d.get("source")), f"<code class='hash'>{fmt(d.get('sha256'))}"
                     "</code>", fmt(d.get("file")), esc(warn)])
    body += ("<h3>Data</h3><p>Forget and retain are trained on; neighbours (facts of the forget kind that must stay) "
             "and holdout (never known) are only evaluated.</p>"
             + table(["set", "examples", "source", "sha256 of the records", "file", "warnings"], rows, "data",
                     raw=True))
    return body


def influence_section(rep: dict) -> str:
    mask = rep.get("mask") or {}
    if not mask:
        return "<p>No mask recorded.</p>"
    sel, tot = mask.get("selected"), mask.get("total")
    frac = f" ({100 * sel / tot:.3g} %)" if isinstance(sel, int) and tot else ""
    count = f"{sel:,} of {tot:,}" if isinstance(sel, int) and isinstance(tot, int) else f"{fmt(sel)} of {fmt(tot)}"
    body = (f"<p>{count} scored weights selected{frac}; selector {fmt(mask.get('selector'))}, "
            f"scope {fmt(mask.get('scope'))}.</p>")
    body += table(["figure", "value"], scalar_rows(mask, "mask"), "kv", raw=True)
    figs = []
    sc = mask.get("scores") if isinstance(mask.get("scores"), dict) else None
    if sc and sc.get("values"):
        figs.append(figure(G.heatmap(sc["blocks"], sc["modules"], sc["values"], "Influence (GRI) score per block × "
                                     "module — mean log10 score", "viridis", fmt=".2f"),
                           define("scores", "mask")))
    dens = mask.get("density") or {}
    if dens.get("values"):
        pct_vals = [[None if v is None else 100 * v for v in row] for row in dens["values"]]
        sp = mask.get("sparsity")
        figs.append(figure(G.heatmap(dens["blocks"], dens["modules"], pct_vals, "Selected weights per block × module "
                                     f"(%){'' if sp is None else f' at {100 * sp:.3g} % sparsity'}", "reds", vmin=0,
                                     fmt=".3g"), define("density", "mask")))
    hist = (sc or {}).get("hist") if sc else None
    if isinstance(hist, dict) and hist.get("counts"):
        thr = mask.get("threshold_log10")
        figs.append(figure(G.histogram(hist["log10_edges"], hist["counts"], "Distribution of log10 GRI scores",
                                       "log10 GRI score", "weights (log scale)", log_y=True,
                                       vline=None if thr is None else (thr, f"threshold {thr:.3g}: {sel:,} selected"),
                                       colors=lambda x: "#e45756" if thr is not None and x >= thr else "#4c78a8"),
                           "Weights right of the threshold are selected."))
    if not sc:
        body += ("<p class='small'>The score map and the score histogram were not recorded in this report (reports "
                 "written before they were added, or a selector without scores).</p>")
    return body + "<div class='figs'>" + "".join(figs) + "</div>"


def unlearning_section(rep: dict) -> str:
    hist = [h for h in rep.get("history") or [] if isinstance(h, dict)]
    stop = rep.get("stopping") if isinstance(rep.get("stopping"), dict) else None
    checks = [c for c in (stop or {}).get("checks") or [] if isinstance(c, dict)]
    if not checks:
        checks = [h["check"] for h in hist if isinstance(h.get("check"), dict)]
    stopped = (stop or {}).get("stopped_at")
    body, figs = "", []
    if hist:
        steps = [h.get("step", i + 1) for i, h in enumerate(hist)]
        series = [G.Series(name, steps, [h.get(key) for h in hist], color, dash)
                  for key, name, color, dash in (("forget_loss", "forget term", "#d62728", False),
                                                 ("retain_loss", "retain term", "#1f77b4", False),
                                                 ("loss", "objective", "#555555", True))
                  if any(isinstance(h.get(key), (int, float)) for h in hist)]
        vl = [G.VLine(stopped, f"stopped at step {stopped}")] if isinstance(stopped, (int, float)) else []
        check_steps = {c.get("step") for c in checks}
        pts = [(h.get("step"), h.get("forget_loss"), "#333", f"check at step {h.get('step')}") for h in hist
               if h.get("step") in check_steps]
        figs.append(figure(G.lines(series, "Unlearning losses per step", "step", "loss", vl, pts),
                           "Open circles: the stop-when-forgotten checks; dashed line: the step the run stopped at."))
    if checks:
        cs = [c.get("step") for c in checks]
        series = [G.Series("forget NLL", cs, [c.get("forget_nll") for c in checks], "#d62728", markers=True),
                  G.Series("reference NLL", cs, [c.get("reference_nll") for c in checks], "#7f7f7f", True, True)]
        vl = [G.VLine(stopped, f"stopped at step {stopped}")] if isinstance(stopped, (int, float)) else []
        figs.append(figure(G.lines(series, "Stop-when-forgotten checks: forget vs reference NLL", "step",
                                   "NLL per answer token", vl),
                           "The run stops once forget NLL reaches the reference level and the greedy forget answers "
                           "are gone."))
    body += "<div class='figs'>" + "".join(figs) + "</div>"
    if stop:
        verdict = (f"stopped at step {stopped} of a budget of {fmt(stop.get('budget_steps'))}"
                   if stopped is not None else f"used the whole budget of {fmt(stop.get('budget_steps'))} steps")
        body += f"<h3>Stopping</h3><p>The run {verdict}.</p>" + table(
            ["figure", "value"], scalar_rows(stop, "stopping", skip=("checks",)), "kv", raw=True)
    elif hist:
        body += "<p>No stopping rule: the run used its whole step budget.</p>"
    if checks:
        keys = list(dict.fromkeys(k for c in checks for k in c))
        body += "<h3>Checks</h3>" + chunked_table(keys, [[c.get(k) for k in keys] for c in checks])
        body += "<ul class='defs'>" + "".join(f"<li><code>{esc(k)}</code>: {esc(define(k, 'check'))}</li>"
                                              for k in keys if define(k, "check")) + "</ul>"
    if hist:
        keys = list(dict.fromkeys(k for h in hist for k in h if k != "check"))
        body += "<h3>Loss history</h3>" + chunked_table(keys, [[h.get(k) for k in keys] for h in hist])
        body += "<ul class='defs'>" + "".join(f"<li><code>{esc(k)}</code>: {esc(define(k, 'history'))}</li>"
                                              for k in keys if define(k, "history")) + "</ul>"
    from grin_ui.dynamics import html_section as dynamics_html
    from grin_ui.spunge import html_section as spunge_html

    body += spunge_html(rep.get("spunge")) + dynamics_html(rep.get("dynamics"))  # SPEC §3.7, §3.8 (when recorded)
    return body


def _gen_table(name: str, before: list, after: list | None, after_label: str = "unlearned") -> str:
    after = after or []
    rows = []
    for i, b in enumerate(before):
        a = after[i] if i < len(after) and isinstance(after[i], dict) else {}
        hit = f"{'✓' if b.get('hit') else '✗'} → {'✓' if a.get('hit') else '✗' if a else '—'}"
        rows.append([esc(b.get("question") or ""), esc(b.get("reference") or ""), esc(b.get("generation") or ""),
                     esc(a.get("generation", "—")), hit])
    return (f"<h3>{esc(name)} set: answers side by side</h3>"
            + table(["question", "reference", "original", after_label, "hit"], rows, "gens", raw=True))


def compare_section(rep: dict) -> str:
    ev = rep.get("eval") or {}
    e0, e1 = ev.get("original") or {}, ev.get("unlearned") or {}
    sets = list(dict.fromkeys(_sets(e0) + _sets(e1)))
    cols = [(s, label, e) for s in sets for label, e in (("before", e0), ("after", e1))]
    body = ("<p>Forget: lower means more forgotten. Retain and neighbours: should stay as before. Holdout: facts "
            "the model never knew (the level a forgotten answer should fall to).</p>" + set_metrics_table(cols))
    states = [("original", e0), ("unlearned", e1)] + [(f"{p} · unlearned", r.get("unlearned") or {})
                                                      for p, r in (ev.get("probes") or {}).items()]
    metrics = ("answer_hit_rate", "rougeL_recall", "answer_prob")
    shown = [s for s in ("forget", "retain", "neighbours") if s in sets]
    short = {"answer_hit_rate": "hit rate", "rougeL_recall": "ROUGE-L", "answer_prob": "answer prob."}
    cats = [f"{s}\n{short[m]}" for s in shown for m in metrics]
    series = [G.Series(label, None, [((e.get(s) or {}).get(m)) for s in shown for m in metrics],
                       STATE_COLORS[i % len(STATE_COLORS)]) for i, (label, e) in enumerate(states)]
    body += figure(G.bars(cats, series, "Metrics: original vs unlearned (and quantized unlearned)",
                          "value (higher = more knowledge)", ymax=1.0))
    for s in sets:
        ex0 = (e0.get(s) or {}).get("examples") or []
        if ex0:
            body += _gen_table(s, ex0, (e1.get(s) or {}).get("examples"))
    return body


def mia_section(rep: dict) -> str:
    t = group_table("mia", _states(rep))
    if not t:
        return "<p class='nm'>Not measured: membership inference needs a holdout set.</p>"
    return ("<p>AUC of each attack with the forget set as members and the holdout set as non-members. 0.5: the "
            "attacker cannot tell them apart — what good unlearning reaches; near 1: the forget set still stands out "
            "(not forgotten); near 0: it is now less likely than facts never seen (over-unlearned, detectable "
            "too).</p>" + t)


def utility_section(rep: dict) -> str:
    t = group_table("utility", _states(rep))
    return t or "<p class='nm'>Not measured: the run skipped utility (--no-utility).</p>"


def semeval_section(rep: dict) -> str:
    t = group_table("semeval", _states(rep))
    return t or "<p class='nm'>Not measured: SemEval-style scores need a forget and a retain set.</p>"


def probes_section(rep: dict) -> str:
    ev = rep.get("eval") or {}
    probes = ev.get("probes") or {}
    rec = rep.get("recovery") or {}
    if not probes and not rec:
        return "<p class='nm'>Not measured: no quantization probe was run.</p>"
    body = ""
    if rec:
        metrics = list(dict.fromkeys(k for v in rec.values() for k in v))
        rows = [[metric_cell(m, "recovery")] + [("—" if (rec[p] or {}).get(m) is None else f"{rec[p][m]:.1f} %")
                                               for p in rec] for m in metrics]
        body += "<h3>Recovery of forgotten knowledge</h3><p>" + esc(define("recovery")) + "</p>"
        body += table(["forget metric", *rec], rows, "metrics", raw=True)
        cats = [LABELS.get(m, m) for m in metrics]
        series = [G.Series(p, None, [(rec[p] or {}).get(m) for m in metrics], STATE_COLORS[(i + 2) % 8])
                  for i, p in enumerate(rec)]
        body += figure(_recovery_bars(cats, series))
    for p, res in probes.items():
        e0, e1 = res.get("original") or {}, res.get("unlearned") or {}
        sets = list(dict.fromkeys(_sets(e0) + _sets(e1)))
        cols = [(s, label, e) for s in sets for label, e in (("Q(orig.)", e0), ("Q(unl.)", e1))]
        body += (f"<h3>{esc(p)}: metrics of the quantized models</h3><p class='small'>Q(orig.): the original model "
                 f"quantized with {esc(p)}; Q(unl.): the unlearned model quantized the same way.</p>"
                 + set_metrics_table(cols))
        full = (ev.get("unlearned") or {}).get("forget", {}).get("examples") or []
        q = (e1.get("forget") or {}).get("examples") or []
        if full and q:
            body += _gen_table("forget", full, q, f"{p} · unlearned").replace(
                "<th>original</th>", "<th>unlearned (full precision)</th>", 1).replace(
                "forget set: answers side by side", f"forget set after {esc(p)}: does the answer come back?", 1)
    return body


def _recovery_bars(cats, series) -> str:
    vals = [v for s in series for v in s.y if isinstance(v, (int, float))]
    top = max([100.0] + vals)
    shifted = [G.Series(s.name, None, [None if v is None else max(v, 0.0) for v in s.y], s.color) for s in series]
    return G.bars(cats, shifted, "Recovery under quantization (%; negative values drawn at 0)", "recovery %",
                  ymax=top, value_fmt=".0f")


def survival_section(rep: dict) -> str:
    surv = rep.get("survival") or {}
    if not surv:
        return "<p class='nm'>Not measured: no quantization probe was run.</p>"
    probes = list(surv)
    keys = _keys([surv[p] for p in probes], ())
    lists = [k for k in dict.fromkeys(k for p in probes for k, v in surv[p].items() if isinstance(v, list)
                                      and not (v and isinstance(v[0], list)))]
    rows = [[metric_cell(k, "survival")] + [fmt(surv[p].get(k)) for p in probes] for k in keys + lists]
    hists = [surv[p].get("ratio_hist") if isinstance(surv[p].get("ratio_hist"), dict) else {} for p in probes]
    rows += [[metric_cell(k, "ratio_hist") + " <span class='tag'>ratio_hist</span>"] + [fmt(h.get(k)) for h in hists]
             for k in _keys(hists, ())]
    body = table(["figure", *probes], rows, "metrics", raw=True)
    for p, s in surv.items():
        rh = s.get("ratio_hist") if isinstance(s.get("ratio_hist"), dict) else {}
        body += f"<h3>{esc(p)}: survival map and change sizes</h3>"
        figs = []
        for key, title, scale, lo, hi in (("values", "Changes whose quantization code moves (%)", "rdylgn", 0, 100),
                                          ("share_values", "Share of the update surviving (%)", "rdylgn", 0, 100),
                                          ("scale_only_values", "Moved by the block scale only (%)", "reds", 0, None),
                                          ("cosine_values", "cos(ΔQ, Δw)", "viridis", 0, 1)):
            grid = s.get(key)
            if grid and s.get("blocks") is not None:
                scale100 = 100 if hi == 100 or key == "scale_only_values" else 1
                vals = [[None if v is None else scale100 * v for v in row] for row in grid]
                figs.append(figure(G.heatmap(s["blocks"], s["modules"], vals, f"{title} — {p}", scale, lo, hi,
                                             fmt=".3g"), f"survival.{p}.{key}: {define(key, 'survival')}"))
        if rh.get("counts"):
            half = math.log10(0.5)
            figs.append(figure(G.histogram(rh["log10_edges"], rh["counts"], f"|Δw| relative to the quantization bin "
                                           f"— {p}", "|Δw| / bin width at the weight (log scale)", "changed weights",
                                           vline=(half, "half a bin"), log10_x_ticks=True,
                                           colors=lambda x: "#9e9e9e" if x < half else "#2ca02c"),
                               "Grey: changes under half a bin, mostly rounded away; green: large enough to move the "
                               f"code. {pct(rh.get('share_at_least_half'), 1)} of the changes are ≥ 0.5 bin."))
        body += "<div class='figs two'>" + "".join(figs) + "</div>"
    return body


def _relearn_loss(rl: dict) -> str:
    loss = (rl.get("forget") or {}).get("loss")
    if not isinstance(loss, list) or not loss:
        return ""
    series = [G.Series("forget part", list(range(1, len(loss) + 1)), loss, "#d62728")]
    ref_loss = (rl.get("reference") or {}).get("loss")
    if isinstance(ref_loss, list) and ref_loss:
        series.append(G.Series("reference (never known)", list(range(1, len(ref_loss) + 1)), ref_loss, "#7f7f7f",
                               True))
    return figure(G.lines(series, "Relearning: training loss per step", "step", "loss"),
                  "Fine-tuning loss on the part of the forget set relearned on, and on the holdout part (reference).")


def _relearn_examples(rl: dict) -> str:
    ex = [e for e in (rl.get("forget") or {}).get("examples") or [] if isinstance(e, dict)]
    if not ex:
        return ""
    def mark(hit) -> str:
        return "✓" if hit else "✗"

    rows = [[esc(e.get("question") or ""), esc(e.get("reference") or ""), esc(e.get("before") or ""),
             esc(e.get("after") or ""), f"{mark(e.get('hit_before'))} → {mark(e.get('hit_after'))}"] for e in ex]
    return ("<h3>Held-out forget answers before and after relearning</h3>"
            + table(["question", "reference", "unlearned", "relearned", "hit"], rows, "gens", raw=True))


def relearn_section(rep: dict, custom=None) -> str:
    """The relearning probe: ``custom(rep)`` (grin_ui.report._relearn_section, its own heading dropped) or the
    recovery table and the evaluated parts' metrics, then the loss per step and the held-out answers."""
    rl = rep.get("relearn")
    if not isinstance(rl, dict):
        return "<p class='nm'>Not measured: the relearning probe was not run.</p>"
    body = re.sub(r"^\s*<h2>.*?</h2>", "", custom(rep) or "", count=1, flags=re.S) if custom else ""
    if body:  # that table names the metrics by their keys: add their definitions
        keys = list(dict.fromkeys([*(rl.get("recovery") or {}), "recovery", "reference_gain"]))
        body += "<ul class='defs'>" + "".join(f"<li><code>{esc(k)}</code>: {esc(define(k, 'relearn'))}</li>"
                                              for k in keys if define(k, "relearn")) + "</ul>"
    else:
        rec, gain = rl.get("recovery") or {}, rl.get("reference_gain") or {}
        metrics = list(dict.fromkeys([*rec, *gain]))
        if metrics:
            rows = [[metric_cell(m), "—" if rec.get(m) is None else f"{rec[m]:.1f} %",
                     "—" if gain.get(m) is None else f"{gain[m]:.1f} %"] for m in metrics]
            body += ("<p>" + esc(define("recovery", "relearn")) + " " + esc(define("reference_gain", "relearn"))
                     + "</p>" + table(["metric", "recovery", "reference gain"], rows, "metrics", raw=True))
        parts = [(label, d) for label, d in (("forget · original", (rl.get("forget") or {}).get("original")),
                                             ("forget · before", (rl.get("forget") or {}).get("before")),
                                             ("forget · after", (rl.get("forget") or {}).get("after")),
                                             ("reference · before", (rl.get("reference") or {}).get("before")),
                                             ("reference · after", (rl.get("reference") or {}).get("after")))
                 if isinstance(d, dict)]
        if parts:
            keys = _keys([d for _, d in parts], SET_METRIC_ORDER)
            body += "<h3>Evaluated parts</h3>" + table(["figure", *[p for p, _ in parts]],
                                                       [[metric_cell(k)] + [fmt(d.get(k)) for _, d in parts]
                                                        for k in keys], "metrics", raw=True)
        body += "<h3>Settings</h3>" + table(["setting", "value"], list((rl.get("config") or {}).items()), "kv")
    return body + _relearn_loss(rl) + _relearn_examples(rl)


def repro_section(rep: dict) -> str:
    m, files = rep.get("model") or {}, rep.get("files") or {}
    delta = files.get("delta_sha256")
    rows = [["model weights sha256", f"<code class='hash'>{fmt(m.get('weights_sha256'))}</code>"],
            ["model", fmt(m.get("spec"))], ["seed", fmt(rep.get("seed"))]]
    rows += [[f"data · {esc(n)} sha256", f"<code class='hash'>{fmt(d.get('sha256'))}</code>"]
             for n, d in (rep.get("data") or {}).items()]
    rows.append([f"{esc(files.get('delta', 'delta.safetensors'))} sha256",
                 f"<code class='hash'>{fmt(delta)}</code>" if delta else
                 "not recorded (this report was not written next to its delta)"])
    rows += [[f"file · {esc(k)}", fmt(v)] for k, v in files.items() if k not in ("delta_sha256", "delta")]
    rows += [["report created", fmt(rep.get("created"))], ["report format version", fmt(rep.get("grin_ui_report"))]]
    body = table(["item", "value"], rows, "kv", raw=True)
    if rep.get("rerun"):
        body += ("<h3>Re-run this session</h3><p>Run from the folder of report.json (the data files must have the "
                 "recorded sha256):</p><pre class='cmd'>" + esc(rep["rerun"]) + "</pre>")
    body += "<h3>Library versions</h3>" + table(["package", "version"], list((rep.get("versions") or {}).items()), "kv")
    t = rep.get("timings") or {}
    if t:
        body += "<h3>Timings (s)</h3>" + table(["stage", "seconds"], [[k, v] for k, v in t.items()], "kv")
    seconds = [[label, ev.get("seconds")] for label, ev in _states(rep) if "seconds" in ev]
    if seconds:
        body += (f"<h3>Evaluation time per state</h3><p>{metric_cell('seconds')}</p>"
                 + table(["state", "seconds"], seconds, "kv"))
    body += "<h3>Configuration</h3><pre>" + esc(json.dumps(rep.get("config"), indent=2)) + "</pre>"
    notes = rep.get("notes") or []
    if notes:
        body += "<h3>Notes</h3><ul>" + "".join(f"<li class='note'>{esc(n)}</li>" for n in notes) + "</ul>"
    return body


def other_figures(rep: dict) -> str:
    """Anything the report holds that no section above shows (later additions): blocks of the evaluations as
    tables (figure × state), other top-level keys as JSON."""
    parts, states = [], _states(rep)
    extra = list(dict.fromkeys(k for _, ev in states for k, v in ev.items() if k not in SET_ORDER
                               and k not in STATE_GROUPS and k != "seconds"
                               and not (isinstance(v, dict) and "answer_hit_rate" in v)))
    for k in extra:
        if any(isinstance(ev.get(k), dict) for _, ev in states):
            parts.append(f"<h3>eval · {esc(k)}</h3>" + group_table(k, states))
        else:
            parts.append(f"<h3>eval · {esc(k)}</h3><p><code>{esc(k)}</code></p>"
                         + table(["state", k], [[label, ev.get(k)] for label, ev in states if k in ev]))
    for k, v in rep.items():
        if k not in HANDLED_TOP:
            parts.append(f"<h3>{esc(k)}</h3><pre>{esc(json.dumps(v, indent=1))}</pre>")
    return "".join(parts)


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
