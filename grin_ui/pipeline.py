"""GRIN as one call: score → mask → snapshot → noise → unlearn (used by the CLI and the dashboard).

    result = unlearn_pipeline(lm, forget, retain, RunConfig())
    # lm.model now holds the unlearned weights; result.delta.undo(lm.model) restores the original bit-exactly

The snapshot of the masked entries is taken before the noise, so ``result.delta`` covers original → final (noise
included), and π_ref for NPO / the KL retain term is computed before the noise too. A cancelled run (``cancel()``
true or a set ``threading.Event``) leaves the model exactly as it was before the call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from grin_ui.config import RunConfig
from grin_ui.data import Record
from grin_ui.delta import SparseDelta
from grin_ui.errors import GrinError
from grin_ui.influence import Scores, compute_scores, scored_parameters
from grin_ui.mask import Mask, build_mask
from grin_ui.noise import add_noise
from grin_ui.train import is_cancelled, prepare_unlearn, unlearn

# share of the progress bar per stage (scoring dominates on CPU)
_STAGES = {"score": (0.0, 0.45), "mask": (0.45, 0.5), "prepare": (0.5, 0.55), "noise": (0.55, 0.56),
           "unlearn": (0.56, 1.0)}


@dataclass
class GrinResult:
    scores: Scores | None
    mask: Mask | None
    delta: SparseDelta | None  # original -> unlearned (None when cancelled)
    history: list[dict] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    cancelled: bool = False
    stats: dict = field(default_factory=dict)
    stopping: dict | None = None  # the stop-when-forgotten checks and stopping step (grin_ui.stopping)
    dynamics: dict | None = None  # per-example answer log-probs over the steps (grin_ui.dynamics), when recorded
    spunge: dict | None = None  # split–unlearn–merge: the per-subset runs (grin_ui.spunge), when split


def unlearn_pipeline(lm, forget: list[Record], retain: list[Record], cfg: RunConfig | None = None, progress=None,
                     cancel=None, scores: Scores | None = None, on_step=None,
                    holdout: list[Record] | None = None, dynamics=None) -> GrinResult:
    """Run GRIN on ``lm`` (a :class:`grin_ui.models.LoadedModel`). ``scores``: reuse GRI scores already computed
    for this model and data (skips scoring). progress(stage, fraction, message), fraction in [0, 1] overall.
    on_step(step, steps, forget_term, retain_term): called after every training step (live loss curves).
    holdout: facts of the forget set's kind the model never knew — the level the stop-when-forgotten check stops at
    (``cfg.unlearn.stop_when_forgotten``; see :mod:`grin_ui.stopping`). dynamics: a
    :class:`grin_ui.dynamics.DynamicsRecorder` (default: built from forget, retain and holdout when
    ``cfg.unlearn.dynamics_every`` > 0): step 0 before the noise, every few steps, and the last step run."""
    cfg = cfg or RunConfig()
    model, tok = lm.model, lm.tokenizer
    timings: dict[str, float] = {}

    def report(stage, frac, msg):
        if progress:
            a, b = _STAGES[stage]
            progress(stage, a + (b - a) * max(0.0, min(1.0, frac)), msg)

    def stopped(scores_, mask_=None):
        return GrinResult(scores_, mask_, None, [], timings, True)

    selector = cfg.mask.selector
    if selector in ("grin", "forget-saliency") and scores is None:
        t0 = time.perf_counter()
        report("score", 0.0, "computing GRI scores")
        scores = compute_scores(model, tok, forget, retain, cfg.score,
                                progress=lambda d, n, m: report("score", d / max(1, n), m),
                                keep_forget_saliency=selector == "forget-saliency",
                                max_tokens=cfg.limits.max_tokens)
        timings["score"] = time.perf_counter() - t0
    if selector == "forget-saliency" and scores is not None and scores.forget_saliency is None:
        raise GrinError("The forget-saliency baseline needs scores computed with the forget saliency kept.")
    if is_cancelled(cancel):
        return stopped(scores)

    t0 = time.perf_counter()
    report("mask", 0.0, f"selecting weights ({cfg.mask.selector}, {cfg.mask.scope}, p={cfg.mask.sparsity:g})")
    mask = build_mask(scored_parameters(model, cfg.score), scores, cfg.mask, seed=cfg.seed)
    if mask.selected == 0:
        raise GrinError(f"The mask selects no weight at sparsity {cfg.mask.sparsity:g} with the "
                        f"'{cfg.mask.scope}' scope; raise the sparsity.")
    timings["mask"] = time.perf_counter() - t0
    report("mask", 1.0, f"{mask.selected:,} of {mask.total:,} weights selected")
    if is_cancelled(cancel):
        return stopped(scores, mask)

    t0 = time.perf_counter()
    report("prepare", 0.0, "preparing batches and reference log-probs")
    data = prepare_unlearn(model, tok, forget, retain, cfg.unlearn, cfg.seed, cfg.limits.max_tokens)
    timings["prepare"] = time.perf_counter() - t0

    check = None
    if cfg.unlearn.stop_when_forgotten:  # calibrated on the original model, before the noise
        from grin_ui.stopping import ForgetCheck

        check = ForgetCheck.build(tok, forget, holdout, cfg.unlearn, cfg.limits.max_tokens, retain=retain)
        check.calibrate(model)

    if dynamics is None and cfg.unlearn.dynamics_every > 0:
        from grin_ui.dynamics import DynamicsRecorder

        dynamics = DynamicsRecorder.build(tok, {"forget": forget, "retain": retain, "holdout": holdout or []},
                                          cfg.unlearn.dynamics_every, cfg.limits.max_tokens)
    if dynamics is not None:
        dynamics.record(model, 0)  # the original model, before the noise

    t0 = time.perf_counter()
    originals = SparseDelta.snapshot(model, mask.masks)
    add_noise(model, mask, cfg.noise, seed=cfg.seed)
    timings["noise"] = time.perf_counter() - t0
    report("noise", 1.0, f"noise κ={cfg.noise.scale:g} ({cfg.noise.mode}) added to the selected weights")

    t0 = time.perf_counter()
    steps = cfg.unlearn.steps

    def step_done(step, n, f, r):
        tail = f"forget {f:.3f}" + (f", retain {r:.3f}" if r is not None else "")
        report("unlearn", step / max(1, n), f"step {step}/{n}: {tail}")
        if dynamics is not None:
            dynamics.maybe(model, step)
        if on_step:
            on_step(step, n, f, r)

    try:
        res = unlearn(model, tok, forget, retain, mask, cfg.unlearn, cfg.seed, progress=step_done, cancel=cancel,
                      max_tokens=cfg.limits.max_tokens, originals=originals, data=data, holdout=holdout,
                      check=check)
    except BaseException:
        SparseDelta.capture(model, originals).undo(model)  # never leave noise behind
        raise
    timings["unlearn"] = time.perf_counter() - t0
    if res.cancelled:
        return GrinResult(scores, mask, None, res.history, timings, True, res.stats, res.stopping)
    ran = res.stats.get("steps_run") or steps
    if dynamics is not None:
        dynamics.finish(model, ran)
    stop_note = f" (stopped when forgotten, budget {steps})" if res.stopping and res.stopping["stopped_at"] else ""
    report("unlearn", 1.0, f"done: {ran} steps{stop_note}")
    return GrinResult(scores, mask, res.delta, res.history, timings, False, res.stats, res.stopping,
                      dynamics.result() if dynamics is not None else None)
