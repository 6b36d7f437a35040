"""The audit report: one JSON document with every number, its schema, and a self-contained HTML rendering of it.

    rep = build_report(config=..., model=..., ...)   # the one builder (grin_ui.journey.make_report fills it)
    validate_report(rep)                             # GrinError naming the first field that breaks the schema
    write_report(rep, out_dir)                       # out_dir/report.json and out_dir/report.html
    html = render_html(read_report("report.json"))   # what `grin-ui report --from report.json` does

The JSON follows ``grin_ui/report.schema.json`` (JSON Schema 2020-12), version :data:`REPORT_VERSION` in the field
``grin_ui_report``: the configuration and seed, the model (name, spec, sha256 of its weights), the data (sizes and
sha256 of each set), the mask, every metric of the original and unlearned model and of each quantization probe,
recovery percentages, survival fractions, the loss history and the stopping checks, timings per stage, library
versions, the command that re-runs the session, the delta file's sha256 (``files``, when written next to it) and
the auditor's verdict (``verdict``: grin_ui.verdict, thresholds recorded). The HTML (grin_ui.report_html: verdict
first, every figure with its definition, static SVG pictures, print stylesheet) is rendered from the JSON alone.
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

from grin_ui.errors import GrinError
from grin_ui.verdict import Thresholds, compute_verdict

REPORT_VERSION = 2  # v2: one schema for the CLI and the dashboard; neighbours; stopping; rerun
SCHEMA_PATH = Path(__file__).with_name("report.schema.json")
SET_ORDER = ("forget", "retain", "neighbours", "holdout")
HEADLINE_METRICS = ("answer_hit_rate", "rougeL_recall", "answer_prob", "nll", "truth_ratio")
FLUENCY_METRICS = ("ends_rate", "loop_rate", "gibberish_rate")
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
        return _jsonable(x.tolist())
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return None
    if hasattr(x, "item") and callable(x.item):
        return _jsonable(x.item())
    return x


def build_report(*, config: dict, model: dict, data: dict, mask: dict, eval: dict, recovery: dict, survival: dict,
                 history: list, timings: dict, stopping: dict | None = None, rerun: str = "",
                 notes: list[str] | None = None, relearn: dict | None = None,
                 thresholds: Thresholds | None = None, dynamics: dict | None = None,
                 spunge: dict | None = None) -> dict:
    """Assemble the report dict: the only place that fixes its top-level keys (see report.schema.json). Every
    value is made JSON-serializable (tensors to lists, NaN and infinities to null). The verdict
    (grin_ui.verdict.compute_verdict with ``thresholds``, default SPEC §8's targets) is computed from the finished
    dict and stored under ``verdict``, so that the JSON and the HTML carry the same one."""
    rep = _jsonable({
        "grin_ui_report": REPORT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "seed": config.get("seed"),
        "model": model,
        "data": data,
        "mask": mask,
        "eval": eval,
        "recovery": recovery,
        "survival": survival,
        "relearn": relearn,
        "history": history,
        "stopping": stopping,
        "dynamics": dynamics,
        "spunge": spunge,
        "timings": timings,
        "rerun": rerun,
        "versions": library_versions(),
        "notes": list(notes or []),
    })
    rep["verdict"] = compute_verdict(rep, thresholds)
    return rep


# ---------------------------------------------------------------------------------------------- schema


def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate_report(rep: dict) -> None:
    """Raise GrinError naming the first place where ``rep`` breaks the schema (and the version it was written for)."""
    import jsonschema

    version = rep.get("grin_ui_report") if isinstance(rep, dict) else None
    if version != REPORT_VERSION:
        raise GrinError(f"This is not a grin-ui report of version {REPORT_VERSION} (its grin_ui_report field is "
                        f"{version!r}); re-run the session with this version of grin-ui to get one.")
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(rep), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.absolute_path) or "the top level"
        raise GrinError(f"The report does not follow the grin-ui report schema v{REPORT_VERSION}: at {where}: "
                        f"{e.message[:300]}" + (f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""))


def read_report(path: str | Path, validate: bool = True) -> dict:
    """Load a report.json (GrinError with a readable message if it is missing, not JSON or off-schema)."""
    p = Path(path)
    try:
        rep = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GrinError(f"No report at {p}.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GrinError(f"{p.name} is not a JSON report: {e}.") from None
    if validate:
        validate_report(rep)
    return rep


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


def fluency_of(metrics: dict) -> dict:
    """The fluency figures of one set's metrics ({} when the evaluation had none)."""
    f = metrics.get("fluency")
    return f if isinstance(f, dict) else {}


def metrics_rows(rep: dict) -> list[list]:
    """Rows [state, set, headline metrics..., fluency metrics (when any set has them)...] over every evaluated state
    and set, sets in the order forget, retain, neighbours, holdout."""
    with_fluency = any(fluency_of(ev.get(s) or {}) for _, ev in _states(rep) for s in SET_ORDER)
    rows = []
    for state, ev in _states(rep):
        for set_name in SET_ORDER:
            m = ev.get(set_name)
            if isinstance(m, dict):
                row = [state, set_name] + [m.get(k) for k in HEADLINE_METRICS]
                if with_fluency:
                    row += [fluency_of(m).get(k) for k in FLUENCY_METRICS]
                rows.append(row)
    return rows


def metrics_headers(rep: dict) -> list[str]:
    rows = metrics_rows(rep)
    width = len(rows[0]) if rows else 2 + len(HEADLINE_METRICS)
    return (["state", "set", *HEADLINE_METRICS, *FLUENCY_METRICS])[:width]


def _relearn_section(rep: dict) -> str:
    """The relearning probe (the report's ``relearn`` block): per metric, the evaluated part of the forget set
    before and after relearning, the recovery %, and the same for the reference (facts never known)."""
    rl = rep.get("relearn")
    if not rl:
        return ""
    f, ref, cfg = rl.get("forget") or {}, rl.get("reference") or {}, rl.get("config") or {}
    rec, gain = rl.get("recovery") or {}, rl.get("reference_gain") or {}
    orig, before, after = f.get("original") or {}, f.get("before") or {}, f.get("after") or {}
    split = (rl.get("split") or {}).get("forget") or {}
    metrics = [m for m in ("answer_hit_rate", "rougeL_recall", "answer_prob", "nll", "truth_ratio") if m in before]
    rows = [[m, orig.get(m), before.get(m), after.get(m), rec.get(m), (ref.get("before") or {}).get(m),
             (ref.get("after") or {}).get(m), gain.get(m)] for m in metrics]
    n_train, n_eval = len(split.get("train") or []), len(split.get("eval") or [])
    return (f"<h2>Relearning probe</h2><p>The unlearned model fine-tuned for {_fmt(cfg.get('steps'))} steps (lr "
            f"{_fmt(cfg.get('lr'))}) on {n_train} forget examples, measured on the {n_eval} it did not see. "
            "Recovery % = 100 · (M(relearned) − M(unlearned)) / (M(original) − M(unlearned)) on those; the reference "
            "is the same steps on holdout facts the model never knew, in the same units (— without a holdout set or "
            "where undefined).</p>"
            + _table(["metric", "original", "unlearned", "relearned", "recovery %", "reference before",
                      "reference after", "reference gain %"], rows))


def render_html(rep: dict) -> str:
    """The self-contained audit page of ``rep`` (grin_ui.report_html.render: no script, no external resource);
    a pure function of the JSON. The relearning section is :func:`_relearn_section`'s when it gives one."""
    from grin_ui.report_html import render

    return render(rep, globals().get("_relearn_section"))


def write_html(rep: dict, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    h = out / "report.html"
    h.write_text(render_html(rep), encoding="utf-8")
    return h


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_report(rep: dict, out_dir: str | Path, delta=None) -> tuple[Path, Path]:
    """Write out_dir/report.json and out_dir/report.html (rendered from the JSON just written). With ``delta`` (a
    grin_ui.delta.SparseDelta) it is first saved as out_dir/delta.safetensors and ``rep["files"]`` (updated in
    place, so the caller's dict matches the file) records its name and sha256."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if delta is not None:
        path = out / "delta.safetensors"
        delta.save(path)
        rep["files"] = {**(rep.get("files") or {}), "delta": path.name, "delta_sha256": file_sha256(path)}
    j = out / "report.json"
    j.write_text(json.dumps(rep, indent=2, ensure_ascii=False), encoding="utf-8")
    return j, write_html(json.loads(j.read_text(encoding="utf-8")), out)
