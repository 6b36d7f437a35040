"""Formatting pieces of the audit report (grin_ui.report_html): escaping, numbers, tables, figures and the metric
tables shared by its sections (grin_ui.report_sections)."""

from __future__ import annotations

import html
import json
import math

from grin_ui.definitions import GROUPS, define
from grin_ui.verdict import NOT_MEASURED

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
