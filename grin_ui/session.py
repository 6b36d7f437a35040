"""The dashboard's actions: each one step of the journey (grin_ui.journey) for one visitor's session.

    store = SessionStore(default_model="default")
    s = store.get("browser-session-id")
    load_data(store, s, "forget", example_set); compute_scores(store, s); unlearn(store, s, RunConfig())
    evaluate(store, s, "unlearned"); probe(store, s, ["nf4"]); relearn(store, s); write_report(store, s, "out")

An action reads what it needs from the session (grin_ui.store), calls the journey step on the shared base model
under its lock (grin_ui.registry), leaves the base model as the original, and writes its result into the session
only when it succeeds. No step is implemented here: the CLI's ``run`` calls the same journey functions.
``progress`` is ``progress(message, fraction=None)``.

The session store and the model registry are re-exported here for the dashboard's panels.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from pathlib import Path

from grin_ui import journey
from grin_ui.cancel import cancellable
from grin_ui.config import RunConfig
from grin_ui.errors import GrinError
from grin_ui.examples import SET_NAMES
from grin_ui.models import LoadedModel
from grin_ui.registry import BaseModel, ModelRegistry, normalize_spec  # noqa: F401 - re-exported for the panels
from grin_ui.store import Session, SessionStore  # noqa: F401 - re-exported for the panels

__all__ = ["SET_NAMES", "BaseModel", "ModelRegistry", "Session", "SessionStore", "normalize_spec", "load_data",
           "compute_scores", "update_mask", "unlearn", "evaluate", "ask", "baselines", "probe", "relearn", "report",
           "write_report", "teach", "run_config_of", "recovery_demo",
           "dynamics_demo"]


def _say(progress):
    return progress or (lambda msg, frac=None: None)


def _sets(session: Session) -> dict:
    return {n: session.sets[n] for n in SET_NAMES if n in session.sets}


def run_config_of(session: Session) -> RunConfig:
    """The settings of the session's last unlearning run (the defaults before one)."""
    return session.run_config if session.run_config is not None else RunConfig()


def load_data(store: SessionStore, session: Session, name: str, example_set, progress=None) -> list[int]:
    """Tokenize ``example_set`` with the session's model (token counts, truncation warnings) and make it the
    session's ``name`` set. Returns the token counts; truncation warnings are appended to ``example_set.warnings``."""
    from grin_ui.data import encode

    base = store.base(session, _say(progress))
    enc = encode(example_set.records, base.lm.tokenizer, RunConfig().limits.max_tokens)
    for w in enc.warnings:
        if w not in example_set.warnings:
            example_set.warnings.append(w)
    session.set_data(name, example_set, enc.token_counts)
    return enc.token_counts


def compute_scores(store: SessionStore, session: Session, cfg: RunConfig | None = None, progress=None):
    """GRI scores of the session's forget vs retain set on the original weights (journey.score), kept in the
    session (without the forget saliency, which only the forget-saliency baseline needs: it computes its own)."""
    import time

    session.require("forget", "retain")
    cfg = cfg or RunConfig()
    say = _say(progress)
    sets = _sets(session)
    t0 = time.perf_counter()
    scores = store.run_on_model(session, lambda lm: journey.score(lm, sets, cfg, say), progress=say,
                                action="scoring")
    session.mask = None
    session.mask_settings = {}
    store.store_scores(session, scores)
    session.timings["score"] = time.perf_counter() - t0
    return scores


def update_mask(store: SessionStore, session: Session, cfg: RunConfig):
    """Rebuild the mask from the session's scores for a new sparsity / scope / selector (journey.select). A
    visitor's rebuilds run one at a time (slider events are not queued), so at most one mask is built per visitor."""
    with session.mask_lock:
        session.require("scores")
        mask = journey.select(session.scores, cfg)
        session.set_mask(mask, {"sparsity": cfg.mask.sparsity, "scope": cfg.mask.scope,
                                "selector": cfg.mask.selector})
    return mask


def unlearn(store: SessionStore, session: Session, cfg: RunConfig, progress=None, on_step=None):
    """journey.unlearn on the base model, reusing the session's scores; the result becomes the session's unlearned
    weights (a delta). ``on_step(dict)`` hears every training step (live loss curves). A cancelled run
    (``session.cancel`` set) changes nothing and returns the result with ``cancelled=True``."""
    session.require("forget")
    say = _say(progress)
    sets = _sets(session)

    def step_done(step, steps, f, r):
        if on_step:
            on_step({"step": step, "forget_loss": f, "retain_loss": r})

    res = store.run_on_model(session, lambda lm: journey.unlearn(lm, sets, cfg, say, session.cancel,
                                                                 session.scores, step_done), progress=say,
                           action="unlearning")
    if res.scores is not None and session.scores is None:
        store.store_scores(session, res.scores)
        session.timings["score"] = res.timings.get("score", 0.0)
    if not res.cancelled:
        session.clear_unlearned()
        session.result, session.delta, session.run_config = res, res.delta, cfg
        session.history = list(res.history)
    return res


def evaluate(store: SessionStore, session: Session, which: str = "unlearned", utility: bool = True,
             progress=None, reuse: bool = True) -> dict:
    """journey.evaluate of the original or the unlearned model on the session's sets (cached per state)."""
    if which not in ("original", "unlearned"):
        raise GrinError(f"Unknown model state '{which}'; use original or unlearned.")
    session.require("forget")
    if which == "unlearned":
        session.require("delta")
    cached = session.evals.get(which)
    if reuse and cached is not None and ("utility" in cached or not utility):
        return cached
    say = _say(progress)
    sets, cfg, delta = _sets(session), run_config_of(session), session.delta
    ev = store.run_on_model(session, lambda lm: journey.evaluate(lm, sets, cfg, utility=utility, progress=say),
                            unlearned=which == "unlearned", delta=delta, progress=say)
    if which == "unlearned" and session.delta is not delta:
        return ev  # the session moved on meanwhile: do not cache a stale result
    if which == "unlearned":  # gibberish scores need the original model's answers and weights
        before = evaluate(store, session, "original", utility=False, progress=progress)
        store.run_on_model(session, lambda lm: journey.fluency(lm, before, ev), progress=say)
    session.evals[which] = ev
    return ev


def ask(store: SessionStore, session: Session, questions: list[str], unlearned: bool = False,
        max_new_tokens: int = 64) -> list[str]:
    """Greedy answers of the original (or the session's unlearned) model."""
    from grin_ui.generation import generate

    return store.run_on_model(session, lambda lm: generate(lm.model, lm.tokenizer, questions, max_new_tokens),
                              unlearned=unlearned)


BASELINES = (  # (label, selection of grin_ui.selection_compare)
    ("GRIN (GRI mask + noise)", "grin"),
    ("GRI mask, no noise", "grin-no-noise"),
    ("random mask", "random"),
    ("forget-only saliency", "forget-saliency"),
    ("largest weights", "magnitude"),
    ("no mask (all weights)", "none"),
)
BASELINE_METRICS = ("forget_hit", "retain_kept", "neighbours_kept", "kept_ends", "forget_gibberish", "seconds")


def baselines(store: SessionStore, session: Session, cfg: RunConfig, progress=None,
              variants=BASELINES, seeds=(0, 1)) -> dict[str, dict]:
    """Same objective and budget, different selection (SPEC §3.6), each at every seed of ``seeds``: the runs of
    grin_ui.selection_compare.run_selection from the original model (each selection's learning rate: ``cfg``'s,
    scaled by selection_compare.LR_FACTORS), evaluated on every set without truth ratios
    or holdout answers. Returns label -> {selection, lr, seeds, runs, <metric>: {n, mean, lo, hi}} (95 % interval
    over seeds); kept in ``session.baselines``. The session's own delta is untouched."""
    import time

    from grin_ui import selection_compare as SC

    session.require("forget")
    say = _say(progress)
    sets = _sets(session)  # the holdout feeds each run's stopping check and membership inference
    base = SC.dashboard_config(cfg)
    scores = session.scores
    saliency = any(SC.selection_config(base, n, 0).mask.selector == "forget-saliency" for _, n in variants)
    if (scores is None and any(journey.needs_scores(SC.selection_config(base, n, 0)) for _, n in variants)) or \
            (saliency and scores is not None and scores.forget_saliency is None):  # scored once for every seed
        scores = store.run_on_model(session, lambda lm: journey.score(lm, sets, base, progress=say,
                                                                      keep_forget_saliency=saliency),
                                    progress=say, action="scoring")
        store.store_scores(session, scores)
    box: dict = {}
    out: dict[str, dict] = {}
    runs = [(label, name, seed) for label, name in variants for seed in seeds]
    for i, (label, name, seed) in enumerate(runs):
        if session.cancel.is_set():
            break
        c = SC.selection_config(base, name, seed)
        lo, hi = i / len(runs), (i + 1) / len(runs)

        def job(lm, c=c, label=label, seed=seed, lo=lo, hi=hi):
            if "before" not in box:
                say("Evaluating the original model", lo)
                box["before"] = journey.evaluate(lm, sets, c, utility=False)
            t0 = time.perf_counter()
            row = SC.run_selection(lm, sets, c, box["before"], scores=scores, cancel=session.cancel,
                                   progress=lambda m, f=None: say(f"{label}, seed {seed} — {m}",
                                                                  lo + (hi - lo) * (f or 0)))
            return row and {**row, "seconds": time.perf_counter() - t0}

        row = store.run_on_model(session, job, progress=say, action="unlearning")
        if row is None:
            break
        entry = out.setdefault(label, {"selection": name, "lr": c.unlearn.lr, "runs": []})
        entry["runs"].append(row)
        entry.update({"seeds": [r["seed"] for r in entry["runs"]], "selected": row["selected"],
                      **{m: SC.interval([r.get(m) for r in entry["runs"]]) for m in BASELINE_METRICS}})
    session.baselines = out
    return out


def probe(store: SessionStore, session: Session, kinds, progress=None) -> dict[str, dict]:
    """journey.probe for each kind on the session's unlearned model (SPEC §5): metrics, recovery % against the
    full-precision evaluations, survival map. Results are added to ``session.probes``."""
    kinds = list(kinds or [])
    if not kinds:
        raise GrinError("Pick at least one quantization probe.")
    session.require("forget", "delta")
    say = _say(progress)
    ev0 = evaluate(store, session, "original", utility=False, progress=say)
    ev1 = evaluate(store, session, "unlearned", utility=False, progress=say)
    sets, cfg, delta = _sets(session), run_config_of(session), session.delta
    out: dict[str, dict] = {}
    for i, kind in enumerate(kinds):
        if session.cancel.is_set():
            break
        say(f"{kind}: quantizing and evaluating ({i + 1}/{len(kinds)})", i / len(kinds))
        key = json.dumps([kind, cfg.probe.group_size, cfg.probe.utility, asdict(journey.probe_eval(cfg))],
                         sort_keys=True)
        q0 = session.quantized_original.get(key)  # Q(original) does not depend on the unlearning: once per data
        out[kind] = store.run_on_model(session, lambda lm, kind=kind, q0=q0: journey.probe(
            lm, kind, sets, delta, cfg, ev0, ev1, progress=say, original=q0), progress=say, action="probes")
        session.quantized_original[key] = out[kind]["original"]
    if session.delta is delta:
        session.probes.update(out)
    return out


def relearn(store: SessionStore, session: Session, progress=None) -> dict:
    """journey.relearn on the session's unlearned model (SPEC §5): fine-tune a copy of the unlearned state on part
    of the forget set under the model's lock, measure the rest against the original evaluation, with the holdout
    set as the reference when there is one. Settings: the session's RunConfig.relearn. The result is kept in
    ``session.relearn`` (and goes into the report); ``session.cancel`` stops it (grin_ui.train.Cancelled) and
    changes nothing. The base model holds the original weights afterwards, bit for bit."""
    session.require("forget", "delta")
    say = _say(progress)
    ev0 = evaluate(store, session, "original", utility=False, progress=say)
    sets, cfg, delta = _sets(session), run_config_of(session), session.delta
    out = store.run_on_model(session, lambda lm: journey.relearn(lm, sets, delta, cfg, ev0, progress=say,
                                                                 cancel=session.cancel), progress=say,
                             action="teaching")  # every weight fine-tuned in place: AdamW state for all of them
    if session.delta is delta:
        session.relearn = out
    return out


def recovery_demo(store: SessionStore, session: Session, kinds=None, progress=None, arms=None) -> dict:
    """The built-in comparison "Does quantization undo it? full fine-tuning vs GRIN" (grin_ui.recovery_demo) on the
    session's data and model, under the model's lock: both arms (default ``recovery_demo.default_arms``) from the
    original model with the same data and seed; the session's own unlearning is untouched. Kept in
    ``session.recovery_demo`` until the data or the model change."""
    from grin_ui import recovery_demo as rd

    session.require("forget", "retain")
    say = _say(progress)
    sets, seed = _sets(session), run_config_of(session).seed
    arms = arms or rd.default_arms(seed)
    out = store.run_on_model(session, lambda lm: rd.compare(lm, sets, arms, tuple(kinds or rd.KINDS), progress=say,
                                                            cancel=session.cancel), progress=say,
                             action="teaching")  # its full fine-tuning arm trains every weight
    session.recovery_demo = out
    return out


def dynamics_demo(store: SessionStore, session: Session, progress=None, cfg=None) -> dict:
    """The built-in preset "in- vs out-of-distribution forgetting under gradient ascent" (grin_ui.distribution_demo)
    on the session's model with its own built-in data, under the model's lock; the session's own unlearning is
    untouched. Kept in ``session.dynamics_demo`` until the model or the data change."""
    from grin_ui import distribution_demo as dd

    say = _say(progress)
    out = store.run_on_model(session, lambda lm: dd.compare(lm, cfg, progress=say, cancel=session.cancel),
                             progress=say, action="unlearning")
    session.dynamics_demo = out
    return out


def report(store: SessionStore, session: Session, progress=None, files: dict[str, str] | None = None) -> dict:
    """The audit report of the session (journey.make_report, the same builder as ``grin-ui run``). Evaluates the
    original and the unlearned model first if that was not done yet (cached otherwise). ``files``: the data file
    of each set for the re-run command."""
    from grin_ui.report import weights_sha256

    session.require("forget", "delta")
    say = _say(progress)
    utility = any("utility" in ev for ev in session.evals.values())
    evals = {w: evaluate(store, session, w, utility=utility, progress=say) for w in ("original", "unlearned")}
    base = store.base(session, say)
    say("Hashing the model weights")
    with store.locked(base, say):
        sha = weights_sha256(base.lm.model)
    taught = session.teach if session.teach.get("path") == session.model_spec else {}
    cfg = run_config_of(session)
    scoring = dict(session.timings) if journey.needs_scores(cfg) else {}  # the run reused the tab's scores
    return journey.make_report(
        lm=base.lm, spec=session.model_spec, weights_sha=sha, cfg=cfg, sets=_sets(session),
        result=session.result, evals=evals, probes=session.probes, timings=scoring,
        notes=[_baseline_note(label, row) for label, row in session.baselines.items()],
        taught_from=taught.get("from"), files=files, relearned=session.relearn)


def _baseline_note(label: str, row: dict) -> str:
    parts = [f"Baseline '{label}' ({row['selection']}, lr {row['lr']:g}, seeds {', '.join(map(str, row['seeds']))})"
             f": {row.get('selected') or 0:,} weights selected"]
    for key, what in (("forget_hit", "forget hit rate"), ("retain_kept", "retain kept"),
                      ("neighbours_kept", "neighbours kept")):
        iv = row.get(key) or {}
        if iv.get("mean") is not None:
            ci = f" (95 % interval {iv['lo']:.2f}–{iv['hi']:.2f})" if iv.get("lo") is not None else ""
            parts.append(f"{what} {iv['mean']:.2f}{ci}")
    return "; ".join(parts) + "."


def write_report(store: SessionStore, session: Session, out_dir, progress=None) -> dict[str, Path]:
    """Write the session's report.json, report.html, delta.safetensors and its data sets as JSON lines (so that
    the report's re-run command works on the folder). Returns name -> path of every file written."""
    from grin_ui.report import write_report as _write
    from grin_ui.rerun import write_sets

    out = Path(out_dir)
    files = write_sets(_sets(session), out)
    rep = report(store, session, progress, files=files)
    json_path, html_path = _write(rep, out, delta=session.delta)
    delta_path = out / "delta.safetensors"
    paths = {"report.html": html_path, "report.json": json_path, "delta.safetensors": delta_path}
    paths.update({f: out / f for f in files.values()})
    return paths


def teach(store: SessionStore, session: Session, cfg=None, progress=None):
    """journey.teach on a private copy of the session's model — the shared base model is never trained — cached
    on disk. The taught model becomes the session's model (loaded once and shared by every session that taught
    the same data). Returns (directory, TeachResult); ``session.cancel`` stops it and changes nothing."""
    session.require("forget")
    say = _say(progress)
    base = store.base(session, say)
    with store.reserved(session, "teaching", say), cancellable(session.cancel):  # the copy, its grads and AdamW
        with store.locked(base, say):
            say("Copying the model for teaching")
            lm = LoadedModel(copy.deepcopy(base.lm.model), base.lm.tokenizer, base.lm.summary, base.lm.path)
        try:
            path, result = journey.teach(lm, _sets(session), cfg, progress=say, cancel=session.cancel)
        finally:
            del lm
    store.models.get(str(path), say)
    previous = session.model_spec
    session.set_model(str(path))
    session.teach = {"path": str(path), "from": previous, "result": result}
    return path, result
