"""Per-visitor state over shared base models (SPEC §9).

A dashboard serves many visitors from one process. Each loaded base model (one per model spec) is shared by every
visitor and guarded by its own lock; a visitor never owns a copy of the weights. What a visitor produces (data sets,
scores, mask, the unlearned weights as a :class:`~grin_ui.delta.SparseDelta`, loss history, evaluations, probes) lives
in that visitor's :class:`Session`. Work on the unlearned model applies the session's delta to the base model under
the model's lock and undoes it afterwards, so the base model is always the original between actions.

    store = SessionStore(default_model="default")
    s = store.get("browser-session-id")            # created on first use; least recently used evicted at the cap
    answers = store.run_on_model(s, lambda lm: generate(lm.model, lm.tokenizer, ["Hi?"]), unlearned=True)

This is the only module with process-wide mutable state; :meth:`SessionStore.clear` and
:meth:`ModelRegistry.clear` drop it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

from grin_ui.errors import GrinError
from grin_ui.models import DEFAULT_MODEL, LoadedModel, load_model

SET_NAMES = ("forget", "retain", "holdout")
WAIT_POLL_S = 0.5  # how often a visitor waiting for a busy model is told so


def normalize_spec(spec: str | None) -> str:
    return (spec or "").strip() or DEFAULT_MODEL


# ---------------------------------------------------------------------------------------------- base models


@dataclass
class BaseModel:
    """One loaded model shared by every session that uses its spec. Hold ``lock`` while touching the weights."""

    spec: str
    lm: LoadedModel
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)


class ModelRegistry:
    """Loaded base models, one per spec, loaded once and shared. At most ``max_models`` stay loaded; the least
    recently used idle one is dropped beyond that (a later request loads it again; its weights are the same, so the
    sessions' deltas stay valid)."""

    def __init__(self, max_models: int = 2, device: str | None = None, dtype=None, loader: Callable = load_model):
        self.max_models = max_models
        self.device = device
        self.dtype = dtype
        self._loader = loader
        self._models: OrderedDict[str, BaseModel] = OrderedDict()
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, spec: str | None, progress: Callable[[str], None] | None = None) -> BaseModel:
        """The loaded model for ``spec``, loading it on first use (concurrent callers wait for one load)."""
        key = normalize_spec(spec)
        with self._lock:
            entry = self._models.get(key)
            if entry is not None:
                self._models.move_to_end(key)
                entry.last_used = time.monotonic()
                return entry
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                entry = self._models.get(key)
                if entry is not None:
                    return entry
            lm = self._loader(key, device=self.device, dtype=self.dtype, progress=progress)
            with self._lock:
                entry = BaseModel(key, lm)
                self._models[key] = entry
                self._evict()
                return entry

    def _evict(self) -> None:
        while len(self._models) > self.max_models:
            for key, entry in self._models.items():  # oldest first
                if not entry.lock.locked():
                    del self._models[key]
                    break
            else:
                return  # every model is busy: keep them all for now

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._models)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


# ---------------------------------------------------------------------------------------------- sessions


@dataclass
class Session:
    """What one visitor has produced. Results are replaced only when a step succeeds.

    Downstream results depend on upstream ones: new data or a new model clears scores, mask, unlearned weights and
    evaluations (:meth:`set_model`, :meth:`set_data`); a new mask clears the unlearned weights (:meth:`set_mask`).
    """

    id: str
    model_spec: str = DEFAULT_MODEL
    sets: dict[str, Any] = field(default_factory=dict)  # name -> data.ExampleSet
    token_counts: dict[str, list[int]] = field(default_factory=dict)
    scores: Any = None  # influence.Scores
    mask: Any = None  # mask.Mask for the current sparsity / scope
    mask_settings: dict = field(default_factory=dict)
    result: Any = None  # pipeline.GrinResult of the last unlearning run
    delta: Any = None  # delta.SparseDelta: the unlearned weights
    run_config: Any = None  # config.RunConfig of the last run
    history: list[dict] = field(default_factory=list)  # live loss history of the current / last run
    baselines: dict[str, dict] = field(default_factory=dict)  # selector -> summary of a baseline run
    evals: dict[str, dict] = field(default_factory=dict)  # "original" / "unlearned" -> evaluate_sets output
    probes: dict[str, dict] = field(default_factory=dict)  # kind -> run_probe output (+ recovery, survival)
    teach: dict = field(default_factory=dict)  # knowledge checks and the taught model's directory
    notices: list[str] = field(default_factory=list)  # things the visitor should be told once
    cancel: threading.Event = field(default_factory=threading.Event)
    busy: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)

    # ------------------------------------------------------------------ state transitions

    def clear_unlearned(self) -> None:
        self.result = None
        self.delta = None
        self.run_config = None
        self.history = []
        self.evals.pop("unlearned", None)
        self.probes = {}

    def clear_results(self) -> None:
        self.scores = None
        self.mask = None
        self.mask_settings = {}
        self.baselines = {}
        self.evals = {}
        self.clear_unlearned()

    def set_model(self, spec: str) -> None:
        spec = normalize_spec(spec)
        if spec != self.model_spec:
            self.model_spec = spec
            self.token_counts = {}
            self.clear_results()

    def set_data(self, name: str, example_set, token_counts: list[int] | None = None) -> None:
        if name not in SET_NAMES:
            raise GrinError(f"Unknown data set '{name}'; use one of {', '.join(SET_NAMES)}.")
        self.sets[name] = example_set
        if token_counts is not None:
            self.token_counts[name] = token_counts
        self.clear_results()

    def clear_data(self, name: str) -> None:
        if name in self.sets:
            del self.sets[name]
            self.token_counts.pop(name, None)
            self.clear_results()

    def set_mask(self, mask, settings: dict) -> None:
        self.mask = mask
        self.mask_settings = dict(settings)

    def records(self, name: str) -> list:
        s = self.sets.get(name)
        return list(s.records) if s is not None else []

    def require(self, *names: str) -> None:
        """Raise a GrinError naming the step to do first if a needed piece is missing."""
        for n in names:
            if n in SET_NAMES and n not in self.sets:
                raise GrinError(f"No {n} set yet: add one in step 2 (Data).")
            if n == "scores" and self.scores is None:
                raise GrinError("No influence scores yet: compute them in step 4 (Influence map).")
            if n == "mask" and self.mask is None:
                raise GrinError("No mask yet: compute the influence scores in step 4 (Influence map).")
            if n == "delta" and self.delta is None:
                raise GrinError("No unlearned model yet: run step 5 (Unlearn) first.")

    @contextmanager
    def action(self, what: str = "action"):
        """Hold the session for one long action: a second one of the same visitor is refused (not queued), and the
        cancel flag starts cleared."""
        if not self.busy.acquire(blocking=False):
            raise GrinError(f"Another action of yours is still running; wait for it or cancel it before the {what}.")
        self.cancel.clear()
        try:
            yield self
        finally:
            self.busy.release()

    def pop_notices(self) -> list[str]:
        out, self.notices = self.notices, []
        return out


class SessionStore:
    """All sessions of a server, keyed by an id (the browser session), plus the shared model registry.

    At most ``max_sessions`` sessions are kept; creating one more evicts the least recently used idle session.
    Influence scores are as large as the scored weights (float32), so at most ``max_scored`` sessions keep theirs;
    beyond that the least recently used other session's scores are released (it is told and can recompute them).
    """

    def __init__(self, default_model: str = DEFAULT_MODEL, max_sessions: int = 16, max_scored: int = 4,
                 registry: ModelRegistry | None = None):
        self.default_model = normalize_spec(default_model)
        self.max_sessions = max_sessions
        self.max_scored = max_scored
        self.models = registry if registry is not None else ModelRegistry()
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, sid: str) -> bool:
        return sid in self._sessions

    def get(self, sid: str | None) -> Session:
        """The session ``sid``, created (with the default model) if new; marks it most recently used."""
        if not sid:
            raise GrinError("This request carries no session id; reload the page.")
        with self._lock:
            s = self._sessions.get(sid)
            if s is None:
                s = Session(sid, model_spec=self.default_model)
                self._sessions[sid] = s
                self._evict(keep=sid)
            else:
                self._sessions.move_to_end(sid)
            s.last_used = time.monotonic()
            return s

    def _evict(self, keep: str) -> None:
        while len(self._sessions) > self.max_sessions:
            for sid, s in self._sessions.items():  # oldest first
                if sid != keep and not s.busy.locked():
                    del self._sessions[sid]
                    break
            else:
                return

    def drop(self, sid: str) -> None:
        with self._lock:
            self._sessions.pop(sid, None)

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    def store_scores(self, session: Session, scores) -> None:
        """Keep ``scores`` in ``session``, releasing other sessions' scores beyond ``max_scored``."""
        session.scores = scores
        with self._lock:
            holders = [s for s in self._sessions.values() if s.scores is not None and s is not session]
            excess = len(holders) + 1 - self.max_scored
            for s in holders[:max(0, excess)]:  # least recently used first
                s.scores = None
                s.notices.append("Your influence scores were released to free memory for other visitors; "
                                 "recompute them in step 4 to change the mask.")

    # ------------------------------------------------------------------ working on the weights

    def base(self, session: Session, progress: Callable[[str], None] | None = None) -> BaseModel:
        return self.models.get(session.model_spec, progress)

    def run_on_model(self, session: Session, fn: Callable[[LoadedModel], Any], *, unlearned: bool = False,
                     delta=None, progress: Callable[[str], None] | None = None) -> Any:
        """Call ``fn(lm)`` on the session's base model while holding its lock.

        ``unlearned=True`` applies the session's delta (or ``delta``) for the call and undoes it afterwards, even if
        ``fn`` raises. Without it, ``fn`` sees the original weights; if ``fn`` changes them it must restore them
        itself before returning. ``progress`` hears about loading and about waiting for another visitor.
        """
        base = self.base(session, progress)
        if unlearned:
            delta = delta if delta is not None else session.delta
            if delta is None:
                session.require("delta")
        with self.locked(base, progress):
            if unlearned:
                with delta.applied(base.lm.model):
                    return fn(base.lm)
            return fn(base.lm)

    def locked(self, base: BaseModel, progress: Callable[[str], None] | None = None):
        """Context manager acquiring ``base.lock``, telling ``progress`` while it waits for another visitor."""
        return _Acquire(base, progress)


class _Acquire:
    def __init__(self, base: BaseModel, progress):
        self.base, self.progress = base, progress

    def __enter__(self):
        told = False
        while not self.base.lock.acquire(timeout=WAIT_POLL_S):
            if self.progress and not told:
                self.progress("Waiting for the model: another visitor is using it")
                told = True
        self.base.last_used = time.monotonic()
        return self.base

    def __exit__(self, *exc):
        self.base.lock.release()
        return False


# ---------------------------------------------------------------------------------------------- actions
#
# Each action reads what it needs from the session, works on the shared base model under its lock, leaves the
# base model as the original, and writes its result into the session only when it succeeds. ``progress`` is a
# callable ``progress(message, fraction=None)``; the library's own progress signatures are adapted here.


def _say(progress):
    return (lambda msg, frac=None: progress(msg, frac)) if progress else (lambda msg, frac=None: None)


def _sets(session: Session) -> dict[str, list]:
    return {n: session.records(n) for n in SET_NAMES if n in session.sets}


def _store_evals(session: Session, which: str, ev: dict, utility: bool) -> None:
    session.evals[which] = dict(ev, _utility=utility)


def load_data(store: SessionStore, session: Session, name: str, example_set, progress=None) -> list[int]:
    """Tokenize ``example_set`` with the session's model (token counts, truncation warnings) and make it the
    session's ``name`` set. Returns the token counts; truncation warnings are appended to ``example_set.warnings``."""
    from grin_ui.data import encode

    base = store.base(session, lambda m: _say(progress)(m))
    enc = encode(example_set.records, base.lm.tokenizer, 256)
    for w in enc.warnings:
        if w not in example_set.warnings:
            example_set.warnings.append(w)
    session.set_data(name, example_set, enc.token_counts)
    return enc.token_counts


def compute_scores(store: SessionStore, session: Session, cfg=None, progress=None, max_tokens: int = 256):
    """GRI scores of the session's forget vs retain set on the original weights; kept in the session."""
    from grin_ui.influence import compute_scores as _compute

    session.require("forget", "retain")
    say = _say(progress)
    forget, retain = session.records("forget"), session.records("retain")
    scores = store.run_on_model(
        session,
        lambda lm: _compute(lm.model, lm.tokenizer, forget, retain, cfg,
                            progress=lambda d, n, m: say(m, d / max(1, n)), max_tokens=max_tokens),
        progress=say,
    )
    session.mask = None
    session.mask_settings = {}
    store.store_scores(session, scores)
    return scores


def update_mask(store: SessionStore, session: Session, cfg, seed: int = 0):
    """Rebuild the mask from the session's scores for a new sparsity / scope / selector (no gradients)."""
    from grin_ui.mask import build_mask

    session.require("scores")
    mask = build_mask(None, session.scores, cfg, seed=seed)
    session.set_mask(mask, {"sparsity": cfg.sparsity, "scope": cfg.scope, "selector": cfg.selector})
    return mask


def unlearn(store: SessionStore, session: Session, cfg, progress=None, on_step=None):
    """Run the GRIN pipeline (score → mask → noise → masked unlearning) on the base model and keep the result as the
    session's delta; the base model is restored before the lock is released. Reuses the session's scores when
    present. ``on_step(dict)`` hears every training step (live loss curves). A cancelled run
    (``session.cancel`` set) changes nothing and returns the result with ``cancelled=True``."""
    from grin_ui.pipeline import unlearn_pipeline

    session.require("forget")
    say = _say(progress)
    forget, retain = session.records("forget"), session.records("retain")
    needs_scores = cfg.mask.selector in ("grin", "forget-saliency")
    scores = session.scores if needs_scores else None

    def report(stage, frac, msg):
        say(f"{stage}: {msg}", frac)

    def step_done(step, steps, f, r):
        if on_step:
            on_step({"step": step, "forget_loss": f, "retain_loss": r})

    def job(lm):
        res = unlearn_pipeline(lm, forget, retain, cfg, progress=report, cancel=session.cancel, scores=scores,
                               on_step=step_done)
        if res.delta is not None:
            res.delta.undo(lm.model)
        return res

    res = store.run_on_model(session, job, progress=say)
    if res.scores is not None and session.scores is None and needs_scores:
        store.store_scores(session, res.scores)
    if not res.cancelled:
        session.clear_unlearned()
        session.result, session.delta, session.run_config = res, res.delta, cfg
        session.history = list(res.history)
    return res


def evaluate(store: SessionStore, session: Session, which: str = "unlearned", cfg=None, utility: bool = True,
             progress=None, reuse: bool = True) -> dict:
    """§4 metrics of the original or the unlearned model on the session's sets (cached per state)."""
    from grin_ui.evaluate import evaluate_sets

    if which not in ("original", "unlearned"):
        raise GrinError(f"Unknown model state '{which}'; use original or unlearned.")
    session.require("forget")
    if which == "unlearned":
        session.require("delta")
    cached = session.evals.get(which)
    if reuse and cached is not None and (cached.get("_utility") or not utility):
        return cached
    say = _say(progress)
    sets = _sets(session)
    delta = session.delta
    ev = store.run_on_model(
        session, lambda lm: evaluate_sets(lm.model, lm.tokenizer, sets, cfg, progress=say, utility=utility),
        unlearned=which == "unlearned", delta=delta, progress=say)
    if which == "unlearned" and session.delta is not delta:
        return ev  # the session moved on meanwhile: do not cache a stale result
    _store_evals(session, which, ev, utility)
    return session.evals[which]


def ask(store: SessionStore, session: Session, questions: list[str], unlearned: bool = False,
        max_new_tokens: int = 64) -> list[str]:
    """Greedy answers of the original (or the session's unlearned) model."""
    from grin_ui.generation import generate

    return store.run_on_model(session, lambda lm: generate(lm.model, lm.tokenizer, questions, max_new_tokens),
                              unlearned=unlearned)


BASELINES = (  # (label, selector, noise on)
    ("GRIN (GRI mask + noise)", "grin", True),
    ("GRI mask, no noise", "grin", False),
    ("random mask", "random", True),
    ("forget-only saliency", "forget-saliency", True),
    ("no mask (all weights)", "none", False),
)


def baselines(store: SessionStore, session: Session, cfg, progress=None, variants=BASELINES) -> dict[str, dict]:
    """Same objective and budget, different selection (SPEC §3.6): run each variant from the original model,
    evaluate forget and retain (no utility), undo. Returns label -> {selector, noise, selected, total, forget,
    retain, seconds}, plus "original"; kept in ``session.baselines``. The session's own delta is untouched."""
    import copy
    import time

    from grin_ui.evaluate import evaluate_sets
    from grin_ui.pipeline import unlearn_pipeline

    session.require("forget")
    say = _say(progress)
    forget, retain = session.records("forget"), session.records("retain")
    sets = {n: session.records(n) for n in ("forget", "retain") if n in session.sets}
    keep = ("answer_hit_rate", "rougeL_recall", "answer_prob")

    def short(ev):
        return {n: {k: ev[n][k] for k in keep} for n in sets}

    out: dict[str, dict] = {}
    scores = session.scores
    for i, (label, selector, noise) in enumerate(variants):
        if session.cancel.is_set():
            break
        c = copy.deepcopy(cfg)
        c.mask.selector = selector
        if not noise:
            c.noise.scale = 0.0
        if selector == "forget-saliency" and scores is not None and scores.forget_saliency is None:
            scores = None
        share = (i / len(variants), (i + 1) / len(variants))

        def report(stage, frac, msg, share=share, label=label):
            say(f"{label} — {stage}: {msg}", share[0] + 0.8 * (share[1] - share[0]) * frac)

        def job(lm, c=c, report=report, share=share, label=label):
            t0 = time.perf_counter()
            if "original" not in out:
                say("Evaluating the original model", share[0])
                out["original"] = {"selector": "—", "noise": False, "selected": 0, "total": None,
                                   **short(evaluate_sets(lm.model, lm.tokenizer, sets, utility=False)), "seconds": 0}
            res = unlearn_pipeline(lm, forget, retain, c, progress=report, cancel=session.cancel,
                                   scores=scores if selector in ("grin", "forget-saliency") else None)
            if res.cancelled or res.delta is None:
                return res, None
            try:
                say(f"{label} — evaluating", share[0] + 0.85 * (share[1] - share[0]))
                ev = evaluate_sets(lm.model, lm.tokenizer, sets, utility=False)
            finally:
                res.delta.undo(lm.model)
            return res, {"selector": selector, "noise": c.noise.scale, "selected": res.mask.selected,
                         "total": res.mask.total, **short(ev), "seconds": time.perf_counter() - t0}

        res, row = store.run_on_model(session, job, progress=say)
        if res.scores is not None and scores is None and selector == "grin":
            scores = res.scores
        if row is None:
            break
        out[label] = row
    if scores is not None and session.scores is None:
        store.store_scores(session, scores)
    session.baselines = out
    return out


def probe(store: SessionStore, session: Session, kinds, cfg=None, progress=None) -> dict[str, dict]:
    """Quantization probes (SPEC §5) of the original and the session's unlearned model: for each kind the metrics,
    the recovery % against the full-precision evaluations, and the survival map of the unlearning changes.
    Results are added to ``session.probes`` (kind -> run_probe output + "recovery" + "survival")."""
    from grin_ui.quantize import recovery, run_probe, survival_map

    kinds = list(kinds or [])
    if not kinds:
        raise GrinError("Pick at least one quantization probe.")
    session.require("forget", "delta")
    say = _say(progress)
    ev0 = evaluate(store, session, "original", utility=False, progress=say)
    ev1 = evaluate(store, session, "unlearned", utility=False, progress=say)
    sets = _sets(session)
    delta = session.delta
    out: dict[str, dict] = {}
    for i, kind in enumerate(kinds):
        if session.cancel.is_set():
            break
        say(f"{kind}: quantizing and evaluating ({i + 1}/{len(kinds)})", i / len(kinds))

        def job(lm, kind=kind):
            res = run_probe(lm.model, lm.tokenizer, kind, sets, delta, cfg, progress=say)
            say(f"{kind}: survival map", (i + 0.9) / len(kinds))
            res["survival"] = survival_map(lm.model, delta, kind, getattr(cfg, "group_size", 128))
            return res

        res = store.run_on_model(session, job, progress=say)
        res["recovery"] = recovery(ev0, ev1, res["unlearned"])
        out[kind] = res
    if session.delta is delta:
        session.probes.update(out)
    return out


def report(store: SessionStore, session: Session, progress=None) -> dict:
    """The audit report (:func:`grin_ui.report.build_report`) of what the session has done so far."""
    from grin_ui.report import build_report, weights_sha256

    session.require("forget", "delta")
    say = _say(progress)
    base = store.base(session, say)
    say("Hashing the model weights")
    with store.locked(base, say):
        sha = weights_sha256(base.lm.model)
    summary = base.lm.summary
    res, cfg = session.result, session.run_config

    def clean(ev):
        return {k: v for k, v in ev.items() if not k.startswith("_")}

    ev = {k: clean(v) for k, v in session.evals.items()}
    if session.probes:
        ev["probes"] = {k: {w: clean(p[w]) for w in ("original", "unlearned") if w in p}
                        for k, p in session.probes.items()}
    return build_report(
        config=cfg.to_dict() if cfg is not None else {},
        model={"name": summary.name, "spec": session.model_spec, "source": summary.source,
               "parameters": summary.parameters, "dtype": summary.dtype, "device": summary.device,
               "sha256": sha},
        data={n: {"n": len(s), "source": s.source, "sha256": s.sha256()} for n, s in session.sets.items()},
        mask=dict(res.mask.summary(), delta_entries=session.delta.nnz) if res is not None and res.mask else {},
        eval=ev,
        recovery={k: p.get("recovery") for k, p in session.probes.items()},
        survival={k: {x: p["survival"][x] for x in ("changed", "survived", "fraction", "blocks", "modules",
                                                   "values")} for k, p in session.probes.items()},
        history=session.history,
        timings=dict(res.timings) if res is not None else {},
        notes=[_baseline_note(label, row) for label, row in session.baselines.items()],
    )


def _baseline_note(label: str, row: dict) -> str:
    f, r = row.get("forget", {}), row.get("retain", {})
    return (f"Baseline '{label}': {row.get('selected') or 0:,} weights changed; forget hit rate "
            f"{f.get('answer_hit_rate', float('nan')):.3f}, ROUGE-L {f.get('rougeL_recall', float('nan')):.3f}; "
            f"retain hit rate {r.get('answer_hit_rate', float('nan')):.3f}, "
            f"ROUGE-L {r.get('rougeL_recall', float('nan')):.3f}.")


def write_report(store: SessionStore, session: Session, out_dir, progress=None):
    """Write report.json and report.html for the session into ``out_dir``; returns their paths."""
    from grin_ui.report import write_report as _write

    return _write(report(store, session, progress), out_dir)


def teach(store: SessionStore, session: Session, cfg=None, progress=None):
    """Teach the session's model its forget ∪ retain sets (SPEC §2 step 3) on a private copy — the shared base
    model is never trained — cached on disk (:func:`grin_ui.teach.teach_cached`). The taught model becomes the
    session's model (loaded once and shared by every session that taught the same data). Returns (directory,
    TeachResult); ``session.cancel`` stops it and changes nothing."""
    import copy

    from grin_ui.teach import teach_cached

    session.require("forget")
    say = _say(progress)
    forget, retain = session.records("forget"), session.records("retain")
    base = store.base(session, say)
    with store.locked(base, say):
        say("Copying the model for teaching")
        lm = LoadedModel(copy.deepcopy(base.lm.model), base.lm.tokenizer, base.lm.summary, base.lm.path)
    try:
        path, result = teach_cached(lm, forget, retain, cfg, progress=lambda f, m: say(m, f),
                                    cancel=session.cancel)
    finally:
        del lm
    store.models.get(str(path), say)
    previous = session.model_spec
    session.set_model(str(path))
    session.teach = {"path": str(path), "from": previous, "result": result}
    return path, result
