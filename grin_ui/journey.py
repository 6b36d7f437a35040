"""The audit journey of SPEC §2 as library steps: the one implementation behind ``grin-ui run`` and the dashboard.

    report, result = run_journey(lm, {"forget": f, "retain": r, "holdout": h, "neighbours": n}, RunConfig(),
                                 out_dir="out")

The steps, each used by both faces (:func:`run_journey` runs them in order for the CLI; the dashboard's session
actions in grin_ui.session call them one tab at a time, under the shared model's lock):

    score(lm, sets, cfg)                               GRI scores, forget vs retain gradients
    select(scores, cfg)                                the mask, from the scores alone (no gradients)
    unlearn(lm, sets, cfg, scores=...)                 noise + masked unlearning -> GrinResult (lm.model restored)
    evaluate(lm, sets, cfg, delta=None)                §4 metrics of the original model (or, with delta, unlearned)
    fluency(lm, before, after)                         gibberish scores of both states' answers (original weights)
    probe(lm, kind, sets, delta, cfg, before, after)   a quantization probe with recovery % and survival map
    relearn(lm, sets, delta, cfg, before)              the relearning probe (grin_ui.relearn) on the unlearned model
    teach(lm, sets)                                    optional: fine-tune until the data is known (cached)
    make_report(...)                                   the report (grin_ui.report, schema report.schema.json)

Data roles: ``forget`` and ``retain`` are scored and trained on; ``holdout`` (never known) feeds membership
inference and the stop-when-forgotten check; ``neighbours`` (known facts of the forget kind that must stay) is only
evaluated — never scored, never trained on. Sets are given as name -> ExampleSet or list of Records.
``progress(message, fraction=None)`` everywhere; ``fraction`` in [0, 1] when known.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

from grin_ui.config import RunConfig, TeachConfig
from grin_ui.data import ExampleSet, Record
from grin_ui.errors import GrinError
from grin_ui.evaluate import add_gibberish, evaluate_sets
from grin_ui.examples import SET_NAMES
from grin_ui.influence import Scores, compute_scores
from grin_ui.mask import Mask, build_mask
from grin_ui.models import LoadedModel
from grin_ui.pipeline import GrinResult, unlearn_pipeline
from grin_ui.quantize import recovery, run_probe
from grin_ui.relearn import relearn_probe
from grin_ui.report import build_report, weights_sha256, write_report
from grin_ui.rerun import rerun_command
from grin_ui.train import Cancelled, is_cancelled

SCORE_SHARE = 0.45  # share of the unlearning progress bar taken by scoring (as in grin_ui.pipeline)
RELEARN = "relearn"  # the relearning probe's name in RunConfig.probes, beside the quantization kinds


def quantization_kinds(probes) -> tuple[str, ...]:
    """The quantization probes among ``probes`` (RunConfig.probes also names the relearning probe)."""
    return tuple(p for p in probes if p != RELEARN)


def _say(progress):
    return progress or (lambda message, fraction=None: None)


def records(sets: dict) -> dict[str, list[Record]]:
    """Name -> records of every non-empty set, in the order forget, retain, holdout, neighbours."""
    unknown = [n for n in sets if n not in SET_NAMES]
    if unknown:
        raise GrinError(f"Unknown data set '{unknown[0]}'; use {', '.join(SET_NAMES)}.")
    out = {}
    for name in SET_NAMES:
        recs = list(getattr(sets.get(name), "records", sets.get(name)) or [])
        if recs:
            out[name] = recs
    return out


def check_sets(sets: dict, cfg: RunConfig) -> dict[str, list[Record]]:
    """The records of ``sets`` after the checks every run needs (GrinError with a message otherwise)."""
    recs = records(sets)
    if not recs.get("forget"):
        raise GrinError("The forget set is empty: give the examples the model must forget.")
    if cfg.mask.selector == "grin" and not recs.get("retain"):
        raise GrinError("GRIN scores compare forget and retain gradients: give a retain set "
                        "(or use --selector forget-saliency / random / magnitude / none).")
    return recs


def needs_scores(cfg: RunConfig) -> bool:
    return cfg.mask.selector in ("grin", "forget-saliency")


# ---------------------------------------------------------------------------------------------- steps


def score(lm: LoadedModel, sets: dict, cfg: RunConfig, progress=None,
          keep_forget_saliency: bool | None = None) -> Scores:
    """GRI scores (SPEC §3.1) of forget vs retain on ``lm``'s current weights. ``keep_forget_saliency``: also keep
    |G_f| for the forget-saliency baseline (default: only when the selector is forget-saliency)."""
    recs = records(sets)
    say = _say(progress)
    keep = cfg.mask.selector == "forget-saliency" if keep_forget_saliency is None else keep_forget_saliency
    return compute_scores(lm.model, lm.tokenizer, recs.get("forget", []), recs.get("retain", []), cfg.score,
                          progress=lambda done, n, msg: say(msg, done / max(1, n)), keep_forget_saliency=keep,
                          max_tokens=cfg.limits.max_tokens)


def select(scores: Scores, cfg: RunConfig, params=None) -> Mask:
    """The mask for ``cfg.mask`` from scores alone (what the sparsity slider does; no gradients)."""
    return build_mask(params, scores, cfg.mask, seed=cfg.seed)


def unlearn(lm: LoadedModel, sets: dict, cfg: RunConfig, progress=None, cancel=None, scores: Scores | None = None,
            on_step=None, reference: LoadedModel | None = None, dynamics_examples: int | None = None) -> GrinResult:
    """Score (unless ``scores`` are given), select, add noise and unlearn (grin_ui.pipeline) on forget and retain;
    the holdout set feeds the stopping check; neighbours are never used. On return ``lm.model`` holds the original
    weights again and ``result.delta`` the unlearning. A cancelled run returns ``cancelled=True`` and no delta.
    on_step(step, steps, forget_term, retain_term) hears every training step. ``reference``: a model that never saw
    the forget set, scored for the dynamics' per-example difficulty (only when dynamics are recorded).
    ``dynamics_examples``: at most this many examples per set in the dynamics (default grin_ui.dynamics.MAX_EXAMPLES)."""
    recs = check_sets(sets, cfg)
    say = _say(progress)
    if cfg.spunge.split_by:  # split–unlearn–merge: one run per subset, merged delta (grin_ui.spunge)
        from grin_ui.spunge import spunge

        return spunge(lm, recs, cfg, progress=say, cancel=cancel, on_step=on_step)
    dynamics = None
    if cfg.unlearn.dynamics_every > 0:  # every set, neighbours included (grin_ui.dynamics)
        from grin_ui.dynamics import DynamicsRecorder

        dynamics = DynamicsRecorder.build(lm.tokenizer, recs, cfg.unlearn.dynamics_every, cfg.limits.max_tokens,
                                          **({"max_examples": dynamics_examples} if dynamics_examples else {}))
        if reference is not None:
            dynamics.reference(reference.model)
    timings: dict[str, float] = {}
    if cfg.mask.selector == "forget-saliency" and scores is not None and scores.forget_saliency is None:
        scores = None  # these scores were computed without the forget saliency: compute them again
    if scores is None and needs_scores(cfg):
        t0 = time.perf_counter()
        scores = score(lm, recs, cfg, progress=lambda m, f=None: say(f"score: {m}", SCORE_SHARE * (f or 0.0)))
        timings["score"] = time.perf_counter() - t0
    if is_cancelled(cancel):
        return GrinResult(scores, None, None, [], timings, True)
    res = unlearn_pipeline(lm, recs["forget"], recs.get("retain", []), cfg, cancel=cancel, scores=scores,
                           progress=lambda stage, frac, msg: say(f"{stage}: {msg}", frac), on_step=on_step,
                           holdout=recs.get("holdout"), dynamics=dynamics)
    res.timings = {**timings, **res.timings}
    if res.delta is not None:
        res.delta.undo(lm.model)
    return res


def evaluate(lm: LoadedModel, sets: dict, cfg: RunConfig, delta=None, utility: bool | None = None,
             progress=None) -> dict:
    """SPEC §4 metrics (grin_ui.evaluate.evaluate_sets) of the original model, or with ``delta`` applied (and undone
    afterwards) of the unlearned one, on every set. ``utility``: default ``cfg.utility``."""
    recs = records(sets)
    say = _say(progress)

    def run():
        return evaluate_sets(lm.model, lm.tokenizer, recs, cfg.eval, progress=lambda m: say(m),
                             utility=cfg.utility if utility is None else utility)

    if delta is None:
        return run()
    with delta.applied(lm.model):
        return run()


def fluency(lm: LoadedModel, before: dict, *others: dict) -> float:
    """Add the gibberish measures (grin_ui.fluency) to the original model's evaluation ``before`` and to each of
    ``others`` (e.g. the unlearned model's): every answer is scored by ``lm`` holding the ORIGINAL weights, the
    cut-off calibrated on the original model's own answers. Returns the cut-off (nats per token)."""
    return add_gibberish(lm.model, lm.tokenizer, before, *others)


def probe_eval(cfg: RunConfig):
    """The evaluation settings of the quantization probes: the run's, with the holdout set scored by
    log-probabilities only (membership inference) — the probe asks what comes back of the forgotten facts, not
    whether facts never known appear."""
    return replace(cfg.eval, generate_holdout=False)


def probe(lm: LoadedModel, kind: str, sets: dict, delta, cfg: RunConfig, before: dict, after: dict,
          progress=None, original: dict | None = None) -> dict:
    """Quantization probe ``kind`` (SPEC §5) of the original and the unlearned model: run_probe's output plus
    "recovery" (% per forget metric against the full-precision ``before`` / ``after`` evaluations), "survival"
    (the survival map without its per-tensor list) and "seconds". ``lm.model`` holds the original weights.
    ``original``: the quantized original model's evaluation when already known (it does not depend on
    unlearning), so only the unlearned model is quantized and evaluated. Evaluation settings: :func:`probe_eval`."""
    t0 = time.perf_counter()
    say = _say(progress)
    res = run_probe(lm.model, lm.tokenizer, kind, records(sets), delta, replace(cfg.probe, eval=probe_eval(cfg)),
                    progress=lambda m: say(m), original=original, survival=True)
    res["recovery"] = recovery(before, after, res["unlearned"])
    res["survival"] = {k: v for k, v in res.pop("survival_map").items() if k != "by_tensor"}
    res["seconds"] = time.perf_counter() - t0
    return res


def relearn(lm: LoadedModel, sets: dict, delta, cfg: RunConfig, before: dict, progress=None, cancel=None) -> dict:
    """The relearning probe (SPEC §5, grin_ui.relearn.relearn_probe) of the unlearned model: ``delta`` is applied,
    every weight is fine-tuned for ``cfg.relearn.steps`` steps on part of the forget set and the rest is measured;
    the same steps on the holdout set (facts never known), when there is one, give the reference. ``before``: the
    original model's evaluation (every forget example listed), the denominator of the recovery %. Returns
    relearn_probe's dict ("recovery", "reference_gain", "forget", "reference", "split", "config", "seconds").
    ``lm.model`` holds the original weights before and after, also when cancelled (grin_ui.train.Cancelled)."""
    recs = records(sets)
    if not recs.get("forget"):
        raise GrinError("The relearning probe needs a forget set.")
    say = _say(progress)
    t0 = time.perf_counter()
    with delta.applied(lm.model):
        out = relearn_probe(lm, recs["forget"], recs.get("holdout"), **asdict(cfg.relearn), eval_cfg=cfg.eval,
                            original_eval=before, cancel=cancel, progress=lambda m: say(m))
    out["seconds"] = time.perf_counter() - t0
    return out


def teach(lm: LoadedModel, sets: dict, cfg: TeachConfig | None = None, progress=None, cancel=None, root=None):
    """Teach ``lm`` its forget, retain and neighbours sets until the forget answers are known (grin_ui.teach,
    cached on disk). Returns (directory of the taught model, TeachResult)."""
    from grin_ui.teach import teach_cached

    recs = records(sets)
    if not recs.get("forget"):
        raise GrinError("Teaching needs a forget set.")
    say = _say(progress)
    keep = recs.get("retain", []) + recs.get("neighbours", [])
    return teach_cached(lm, recs["forget"], keep, cfg, progress=lambda f, m: say(m, f), cancel=cancel, root=root)


# ---------------------------------------------------------------------------------------------- the report


def data_info(sets: dict, files: dict[str, str] | None = None) -> dict:
    """Per set: examples, source, sha256 of the records, warnings and the file a re-run reads (or None)."""
    out = {}
    for name in records(sets):
        s = sets[name]
        es = s if isinstance(s, ExampleSet) else ExampleSet(list(getattr(s, "records", s)), name)
        out[name] = {"n": len(es), "source": es.source, "sha256": es.sha256(), "warnings": list(es.warnings),
                     "file": (files or {}).get(name)}
    return out


def mask_info(result: GrinResult) -> dict:
    m, d = result.mask, result.delta
    blocks, modules, values = m.block_module_density()
    return {"selected": m.selected, "total": m.total, "selector": m.selector, "scope": m.scope,
            "sparsity": m.sparsity, "threshold_log10": m.threshold,
            "density": {"blocks": blocks, "modules": modules, "values": values},
            "changed": d.changed() if d is not None else 0, "delta_entries": d.nnz if d is not None else 0,
            **({"scores": scores_info(result.scores, modules)} if result.scores is not None else {})}


def scores_info(scores: Scores, order: list[str] | None = None, bins: int = 60) -> dict:
    """What the report keeps of the GRI scores: the block × module mean log10 score (module columns in ``order``,
    e.g. the mask density's model order, then any others) and the log10 score histogram."""
    blocks, modules, values = scores.block_module_matrix("mean_log10")
    rank = {m: i for i, m in enumerate(order or [])}
    cols = sorted(range(len(modules)), key=lambda j: (rank.get(modules[j], len(rank) + j)))
    edges, counts = scores.log10_histogram(bins)
    return {"blocks": blocks, "modules": [modules[j] for j in cols],
            "values": [[row[j] for j in cols] for row in values], "hist": {"log10_edges": edges, "counts": counts}}


def model_info(lm: LoadedModel, spec: str, sha256: str, taught_from: str | None = None) -> dict:
    s = lm.summary
    return {"name": s.name, "spec": spec, "source": s.source, "architecture": s.architecture,
            "parameters": s.parameters, "dtype": s.dtype, "device": s.device, "weights_sha256": sha256,
            "taught_from": taught_from}


def _clean(ev: dict) -> dict:
    return {k: v for k, v in ev.items() if not k.startswith("_")}


def stage_timings(result: GrinResult, evals: dict, probes: dict, extra: dict | None = None) -> dict[str, float]:
    """Seconds per stage: scoring, mask, noise, unlearning, each evaluation, each probe; "total" is their sum."""
    t = dict(extra or {})
    t.update(result.timings)
    for which in ("original", "unlearned"):
        if which in evals and "seconds" in evals[which]:
            t[f"evaluate_{which}"] = evals[which]["seconds"]
    for kind, p in probes.items():
        t[f"probe_{kind}"] = p["seconds"]
    t["total"] = sum(t.values())
    return t


def make_report(*, lm: LoadedModel, spec: str, weights_sha: str, cfg: RunConfig, sets: dict, result: GrinResult,
                evals: dict, probes: dict, timings: dict | None = None, notes: list[str] | None = None,
                taught_from: str | None = None, files: dict[str, str] | None = None,
                relearned: dict | None = None) -> dict:
    """The report of one session, the same keys for both faces. ``evals``: {"original", "unlearned"};
    ``probes``: kind -> :func:`probe` output; ``relearned``: the :func:`relearn` output, or None when the relearning
    probe was not run; ``files``: the data file of each set for the re-run command. The config block records the
    probes run (the quantization kinds, then "relearn") and whether utility was measured, so that
    ``grin-ui run --config`` repeats exactly this session."""
    utility = all("utility" in evals[k] for k in ("original", "unlearned"))
    done = replace(cfg, probes=tuple(probes) + ((RELEARN,) if relearned is not None else ()), utility=utility)
    timings = {**(timings or {}), **({f"probe_{RELEARN}": relearned["seconds"]} if relearned is not None else {})}
    return build_report(
        config=done.to_dict(),
        model=model_info(lm, spec, weights_sha, taught_from),
        data=data_info(sets, files),
        mask=mask_info(result),
        eval={"original": _clean(evals["original"]), "unlearned": _clean(evals["unlearned"]),
              "probes": {k: {w: _clean(p[w]) for w in ("original", "unlearned")} for k, p in probes.items()}},
        recovery={k: p["recovery"] for k, p in probes.items()},
        survival={k: p["survival"] for k, p in probes.items()},
        relearn=relearned,
        history=result.history, stopping=result.stopping, dynamics=result.dynamics, spunge=result.spunge,
        timings=stage_timings(result, evals, probes, timings),
        rerun=rerun_command(taught_from or spec, files or {}, taught=taught_from is not None),
        notes=["Quantization probes: see grin_ui.quantize for each format's exact definition.",
               "SemEval-style scores follow the SemEval-2025 Task 4 recipe on this tool's own metrics.",
               *(notes or [])],
    )


# ---------------------------------------------------------------------------------------------- the whole journey


def _cached(cache, weights: str, state: str, recs: dict, eval_cfg, utility: bool) -> dict | None:
    if cache is None:
        return None
    from grin_ui.evalcache import eval_key

    return cache.get(eval_key(weights, state, recs, eval_cfg, utility))


def _store(cache, weights: str, state: str, recs: dict, eval_cfg, utility: bool, ev: dict) -> None:
    if cache is not None:
        from grin_ui.evalcache import eval_key

        cache.put(eval_key(weights, state, recs, eval_cfg, utility), ev)


def run_journey(lm: LoadedModel, sets: dict, cfg: RunConfig | None = None, out_dir: str | Path | None = None,
                progress=None, cancel=None, original_eval: dict | None = None, spec: str | None = None,
                taught_from: str | None = None, files: dict[str, str] | None = None,
                cache=None, reference: LoadedModel | None = None) -> tuple[dict, GrinResult]:
    """Every step in order on ``sets``: evaluate, score, mask, noise, unlearn, evaluate, probes (quantization, then
    the relearning probe when ``cfg.probes`` names "relearn"), report.

    ``original_eval``: reuse an evaluation of the original model on the same sets. ``spec`` (how the model was
    named, default its path), ``taught_from`` and ``files`` go into the report's re-run command. With ``out_dir``:
    report.json, report.html and delta.safetensors are written there. On return ``lm.model`` holds the original
    weights; ``result.delta`` is the unlearning. ``cache``: a grin_ui.evalcache.EvalCache for the evaluations that
    do not depend on unlearning (the original model, its quantized copy per probe kind). ``reference``: a model that
    never saw the forget set, for the dynamics' difficulty (grin_ui.dynamics). Raises GrinError for bad
    input, grin_ui.train.Cancelled when cancelled (model restored)."""
    cfg = cfg or RunConfig()
    say = _say(progress)
    recs = check_sets(sets, cfg)
    weights = weights_sha256(lm.model)
    before = original_eval
    if before is None:
        before = _cached(cache, weights, "original", recs, cfg.eval, cfg.utility)
        if before is None:
            say("Evaluating the original model")
            before = evaluate(lm, recs, cfg, progress=say)
            _store(cache, weights, "original", recs, cfg.eval, cfg.utility, before)
        else:
            say("The original model's evaluation: from the cache")
    result = unlearn(lm, recs, cfg, progress=say, cancel=cancel, reference=reference)
    if result.cancelled:
        raise Cancelled("Cancelled; the model was restored.")
    say("Evaluating the unlearned model")
    after = evaluate(lm, recs, cfg, delta=result.delta, progress=say)
    fluency(lm, before, after)
    probes = {}
    for kind in quantization_kinds(cfg.probes):
        say(f"Quantization probe {kind}")
        state = f"{kind}:{cfg.probe.group_size}"
        q0 = _cached(cache, weights, state, recs, probe_eval(cfg), cfg.probe.utility)
        probes[kind] = probe(lm, kind, recs, result.delta, cfg, before, after, progress=say, original=q0)
        if q0 is None:
            _store(cache, weights, state, recs, probe_eval(cfg), cfg.probe.utility, probes[kind]["original"])
    relearned = None
    if RELEARN in cfg.probes:
        say("Relearning probe")
        relearned = relearn(lm, recs, result.delta, cfg, before, progress=say, cancel=cancel)
    report = make_report(lm=lm, spec=spec or lm.path or lm.summary.name, weights_sha=weights, cfg=cfg, sets=sets,
                         result=result, evals={"original": before, "unlearned": after}, probes=probes,
                         taught_from=taught_from, files=files, relearned=relearned)
    if out_dir is not None:
        write_report(report, out_dir, delta=result.delta)  # saves delta.safetensors and records its sha256
    return report, result
