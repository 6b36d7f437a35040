"""The audit report: one JSON document with every number, and a self-contained HTML rendering of it.

    rep = build_report(...)            # dict, JSON-serializable
    write_report(rep, out_dir)         # out_dir/report.json and out_dir/report.html

The JSON holds the configuration and seed, the model (name, source, sha256 of its weights), the data (sizes and
sha256 of each set), the mask, every metric of the original and unlearned model and of each quantization probe,
recovery percentages, survival fractions, the loss history, timings per stage and library versions.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import html
import json
import platform
from importlib import metadata
from pathlib import Path

import torch

HEADLINE_METRICS = ("answer_hit_rate", "rougeL_recall", "answer_prob", "nll", "truth_ratio")
PACKAGES = ("grin-ui", "torch", "transformers", "bitsandbytes", "gradio", "safetensors", "rouge-score", "scipy")


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over the parameter names and raw bytes, in state-dict order (identifies the exact weights)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, float) and x != x:
        return None
    if hasattr(x, "item") and callable(x.item):
        return x.item()
    return x


def build_report(*, config: dict, model: dict, data: dict, mask: dict, eval: dict, recovery: dict,
                 survival: dict, history: list, timings: dict, notes: list[str] | None = None) -> dict:
    """Assemble the report dict (keys as in SPEC §10); all values JSON-serializable."""
    return _jsonable({
        "grin_ui_report": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "seed": config.get("seed"),
        "model": model,
        "data": data,
        "mask": mask,
        "eval": eval,
        "recovery": recovery,
        "survival": survival,
        "history": history,
        "timings": timings,
        "versions": library_versions(),
        "notes": notes or [],
    })


# ---------------------------------------------------------------------------------------------- HTML


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _states(rep: dict) -> list[tuple[str, dict]]:
    ev = rep.get("eval", {})
    states = [(k, ev[k]) for k in ("original", "unlearned") if k in ev]
    for probe, res in (ev.get("probes") or {}).items():
        for which in ("original", "unlearned"):
            if which in res:
                states.append((f"{probe} · {which}", res[which]))
    return states


def metrics_rows(rep: dict) -> list[list]:
    """Rows [state, set, metric values...] over every evaluated state and set."""
    rows = []
    for state, ev in _states(rep):
        for set_name in ("forget", "retain", "holdout"):
            if isinstance(ev.get(set_name), dict):
                rows.append([state, set_name] + [ev[set_name].get(m) for m in HEADLINE_METRICS])
    return rows


def render_html(rep: dict) -> str:
    """A self-contained HTML page (no scripts, no external resources) presenting the report."""
    parts = [f"<h1>grin-ui audit report</h1><p>Created {_fmt(rep.get('created'))}.</p>"]
    m = rep.get("model", {})
    parts.append("<h2>Model</h2>" + _table(["field", "value"], [[k, v] for k, v in m.items() if k != "summary"]))
    data = rep.get("data", {})
    parts.append("<h2>Data</h2>" + _table(
        ["set", "examples", "source", "sha256"],
        [[k, v.get("n"), v.get("source"), v.get("sha256")] for k, v in data.items()]))
    mask = rep.get("mask", {})
    if mask:
        sel, tot = mask.get("selected"), mask.get("total")
        frac = f" ({100 * sel / tot:.3g} %)" if sel is not None and tot else ""
        parts.append(f"<h2>Mask</h2><p>{_fmt(sel)} of {_fmt(tot)} scored weights selected{frac}; selector "
                     f"{_fmt(mask.get('selector'))}, scope {_fmt(mask.get('scope'))}.</p>")
    parts.append("<h2>Metrics</h2><p>Forget set: lower means more forgotten. Retain set: should stay as before."
                 "</p>" + _table(["state", "set", *HEADLINE_METRICS], metrics_rows(rep)))
    rec = rep.get("recovery") or {}
    if rec:
        metrics = sorted({k for v in rec.values() for k in v})
        parts.append(
            "<h2>Recovery under quantization</h2><p>100 · (M(Q(unlearned)) − M(unlearned)) / (M(original) − "
            "M(unlearned)) on the forget set: 0 % = stays forgotten, 100 % = fully comes back; — = undefined "
            "(unlearning did not change the metric).</p>"
            + _table(["probe", *metrics], [[p, *[v.get(k) for k in metrics]] for p, v in rec.items()]))
    surv = rep.get("survival") or {}
    if surv:
        parts.append("<h2>Survival of the changes</h2>" + _table(
            ["probe", "changed weights", "changes surviving quantization", "fraction"],
            [[p, s.get("changed"), s.get("survived"),
              (s["survived"] / s["changed"]) if s.get("changed") else None] for p, s in surv.items()]))
    for state, ev in _states(rep)[:2]:
        ex = (ev.get("forget") or {}).get("examples") or []
        if ex:
            parts.append(f"<h2>Forget-set generations · {html.escape(state)}</h2>" + _table(
                ["question", "reference", "generation", "hit"],
                [[e.get("question"), e.get("reference"), e.get("generation"), e.get("hit")] for e in ex[:20]]))
    t = rep.get("timings", {})
    parts.append("<h2>Timings (s)</h2>" + _table(["stage", "seconds"], [[k, v] for k, v in t.items()]))
    parts.append("<h2>Configuration</h2><pre>" + html.escape(json.dumps(rep.get("config"), indent=2)) + "</pre>")
    parts.append("<h2>Versions</h2>" + _table(["package", "version"], list(rep.get("versions", {}).items())))
    for note in rep.get("notes", []):
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
             "font-size:14px;text-align:left}th{background:#f0f0f5}pre{background:#f6f6f6;padding:1em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>grin-ui audit report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def write_report(rep: dict, out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    j, h = out / "report.json", out / "report.html"
    j.write_text(json.dumps(rep, indent=2, ensure_ascii=False))
    h.write_text(render_html(rep), encoding="utf-8")
    return j, h
