"""The sections of the audit report (grin_ui.report_html), one renderer per dashboard tab: each takes the report
dict and returns HTML (static SVG pictures from grin_ui.svgplot), a pure function of the report."""

from __future__ import annotations

import json
import math
import re

from grin_ui import svgplot as G
from grin_ui.definitions import define
from grin_ui.report_format import HANDLED_TOP, LABELS, SET_METRIC_ORDER, SET_ORDER, STATE_COLORS, STATE_GROUPS, \
    STATUS_TEXT, _keys, _sets, _states, chunked_table, esc, figure, fmt, group_table, metric_cell, pct, \
    scalar_rows, set_metrics_table, table
from grin_ui.verdict import NOT_MEASURED, compute_verdict


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
        if all(isinstance(c.get("answer_nll"), (int, float)) for c in checks):  # answer_level: the whole answers
            series += [G.Series("forget NLL, whole answer", cs, [c["answer_nll"] for c in checks], "#ff7f0e",
                                markers=True),
                       G.Series("reference NLL, whole answer", cs, [c.get("reference_answer_nll") for c in checks],
                                "#bcbd22", True, True)]
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
        kept = [k for k in keys if k.startswith("retain")]  # "and kept": a table of their own (width)
        body += "<h3>Checks</h3>"
        for part in ([k for k in keys if k not in kept], ["step", *kept] if kept else []):
            if part:
                body += chunked_table(part, [[c.get(k) for k in part] for c in checks])
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
