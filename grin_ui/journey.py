"""The whole audit journey as one call: evaluate → GRIN (score, mask, noise, unlearn) → evaluate → quantization
probes → report. Used by ``grin-ui run`` and the dashboard's one-click walkthrough.

    report, result = run_journey(lm, {"forget": f, "retain": r, "holdout": h}, RunConfig(), out_dir="out")

On return ``lm.model`` holds the original weights again; ``result.delta`` is the unlearning (apply it to get the
unlearned model). With ``out_dir``: report.json, report.html and delta.safetensors are written there.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from grin_ui.config import RunConfig
from grin_ui.data import ExampleSet, Record
from grin_ui.errors import GrinError
from grin_ui.evaluate import evaluate_sets
from grin_ui.models import LoadedModel
from grin_ui.pipeline import GrinResult, unlearn_pipeline
from grin_ui.quantize import recovery, run_probe, survival_map
from grin_ui.report import build_report, weights_sha256, write_report


def _records(s) -> list[Record]:
    return list(getattr(s, "records", s) or [])


def data_info(sets: dict) -> dict:
    """Per set: number of examples, source and sha256 of the content (ExampleSet) or of the records."""
    out = {}
    for name, s in sets.items():
        es = s if isinstance(s, ExampleSet) else ExampleSet(_records(s), name)
        out[name] = {"n": len(es), "source": es.source, "sha256": es.sha256(), "warnings": es.warnings}
    return out


def mask_info(result: GrinResult) -> dict:
    m = result.mask
    if m is None:
        return {}
    blocks, modules, values = m.block_module_density()
    return {"selected": m.selected, "total": m.total, "selector": m.selector, "scope": m.scope,
            "sparsity": m.sparsity, "threshold_log10": m.threshold,
            "density": {"blocks": blocks, "modules": modules, "values": values}}


def run_journey(lm: LoadedModel, sets: dict, cfg: RunConfig | None = None, out_dir: str | Path | None = None,
                progress=None, cancel=None, original_eval: dict | None = None) -> tuple[dict, GrinResult]:
    """Run the journey on ``sets`` ({"forget", "retain"[, "holdout"]}: ExampleSets or lists of Records).

    progress(stage, message). ``original_eval``: reuse an evaluation of the original model on the same sets.
    Raises GrinError for bad input, grin_ui.train.Cancelled when cancelled (model restored)."""
    cfg = cfg or RunConfig()
    say = progress or (lambda stage, msg: None)
    records = {k: _records(v) for k, v in sets.items() if _records(v)}
    if not records.get("forget"):
        raise GrinError("The forget set is empty: give the examples the model must forget.")
    if cfg.mask.selector == "grin" and not records.get("retain"):
        raise GrinError("GRIN scores compare forget and retain gradients: give a retain set "
                        "(or use --selector forget-saliency / random / none).")
    model, tok = lm.model, lm.tokenizer
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    t0 = time.perf_counter()
    say("evaluate", "Evaluating the original model")
    before = original_eval or evaluate_sets(model, tok, records, cfg.eval, utility=cfg.utility,
                                            progress=lambda m: say("evaluate", m))
    timings["evaluate_original"] = time.perf_counter() - t0
    base_hash = weights_sha256(model)

    result = unlearn_pipeline(lm, records["forget"], records.get("retain", []), cfg,
                              progress=lambda stage, frac, msg: say(stage, msg), cancel=cancel)
    timings.update(result.timings)
    if result.cancelled:
        from grin_ui.train import Cancelled

        raise Cancelled("Cancelled; the model was restored.")
    delta = result.delta
    try:
        t0 = time.perf_counter()
        say("evaluate", "Evaluating the unlearned model")
        after = evaluate_sets(model, tok, records, cfg.eval, utility=cfg.utility,
                              progress=lambda m: say("evaluate", m))
        timings["evaluate_unlearned"] = time.perf_counter() - t0
    finally:
        delta.undo(model)

    probes, rec, surv = {}, {}, {}
    for kind in cfg.probes:
        t0 = time.perf_counter()
        say("probe", f"Quantization probe {kind}")
        probe = run_probe(model, tok, kind, records, delta, replace(cfg.probe, eval=cfg.eval),
                          progress=lambda m: say("probe", m))
        probes[kind] = probe
        rec[kind] = recovery(before, after, probe["unlearned"])
        s = survival_map(model, delta, kind, cfg.probe.group_size)
        surv[kind] = {k: v for k, v in s.items() if k != "by_tensor"}
        timings[f"probe_{kind}"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all

    s = lm.summary
    report = build_report(
        config=cfg.to_dict(),
        model={"name": s.name, "source": s.source, "architecture": s.architecture, "parameters": s.parameters,
               "dtype": s.dtype, "device": s.device, "weights_sha256": base_hash},
        data=data_info({k: sets[k] for k in records}),
        mask={**mask_info(result), "changed": delta.changed(), "delta_entries": delta.nnz},
        eval={"original": before, "unlearned": after, "probes": probes},
        recovery=rec, survival=surv, history=result.history, timings=timings,
        notes=["Quantization probes: see grin_ui.quantize for each format's exact definition.",
               "SemEval-style scores follow the SemEval-2025 Task 4 recipe on this tool's own metrics."],
    )
    if out_dir is not None:
        write_report(report, out_dir)
        delta.save(Path(out_dir) / "delta.safetensors")
    return report, result
