"""Per-visitor state: what each visitor of a dashboard has produced, kept apart from every other visitor (SPEC §9).

    store = SessionStore(default_model="default")
    s = store.get("browser-session-id")            # created on first use; least recently used evicted at the cap
    answers = store.run_on_model(s, lambda lm: generate(lm.model, lm.tokenizer, ["Hi?"]), unlearned=True)

A :class:`Session` holds a visitor's data sets, scores, mask, unlearned weights (a sparse delta), evaluations and
probes (quantization and relearning). The base models are shared (grin_ui.registry);
:meth:`SessionStore.run_on_model` applies a session's delta under the model's lock and undoes it afterwards, so the
base model is always the original between actions. This and grin_ui.registry are the only modules with process-wide
mutable state; ``clear()`` drops it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

from grin_ui.errors import GrinError
from grin_ui.examples import SET_NAMES
from grin_ui.models import DEFAULT_MODEL, LoadedModel
from grin_ui.registry import BaseModel, ModelRegistry, locked, normalize_spec

EVALUATION_ONLY = ("neighbours",)  # sets that never reach scoring or unlearning: changing one keeps those results


@dataclass
class Session:
    """What one visitor has produced. Results are replaced only when a step succeeds.

    Downstream results depend on upstream ones: new data or a new model clears scores, mask, unlearned weights and
    evaluations (:meth:`set_model`, :meth:`set_data`; a new neighbours set clears only the evaluations); a new mask
    clears the unlearned weights (:meth:`set_mask`).
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
    probes: dict[str, dict] = field(default_factory=dict)  # kind -> journey.probe output
    relearn: dict | None = None  # journey.relearn output (the relearning probe) for the current delta
    recovery_demo: dict | None = None  # grin_ui.recovery_demo.compare output for the current model and data
    timings: dict[str, float] = field(default_factory=dict)  # seconds of steps done outside a run (scoring)
    teach: dict = field(default_factory=dict)  # knowledge checks and the taught model's directory
    notices: list[str] = field(default_factory=list)  # things the visitor should be told once
    cancel: threading.Event = field(default_factory=threading.Event)
    busy: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)

    # ------------------------------------------------------------------ state transitions

    def clear_evaluations(self) -> None:
        self.evals = {}
        self.probes = {}
        self.relearn = None

    def clear_unlearned(self) -> None:
        self.result = None
        self.delta = None
        self.run_config = None
        self.history = []
        self.evals.pop("unlearned", None)
        self.probes = {}
        self.relearn = None

    def clear_results(self) -> None:
        self.scores = None
        self.mask = None
        self.mask_settings = {}
        self.baselines = {}
        self.timings = {}
        self.recovery_demo = None
        self.clear_evaluations()
        self.clear_unlearned()

    def set_model(self, spec: str) -> None:
        spec = normalize_spec(spec)
        if spec != self.model_spec:
            self.model_spec = spec
            self.token_counts = {}
            self.clear_results()

    def _changed(self, name: str) -> None:
        if name in EVALUATION_ONLY:
            self.clear_evaluations()
        else:
            self.clear_results()

    def set_data(self, name: str, example_set, token_counts: list[int] | None = None) -> None:
        if name not in SET_NAMES:
            raise GrinError(f"Unknown data set '{name}'; use one of {', '.join(SET_NAMES)}.")
        self.sets[name] = example_set
        if token_counts is not None:
            self.token_counts[name] = token_counts
        self._changed(name)

    def clear_data(self, name: str) -> None:
        if name in self.sets:
            del self.sets[name]
            self.token_counts.pop(name, None)
            self._changed(name)

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
        with locked(base, progress):
            if unlearned:
                with delta.applied(base.lm.model):
                    return fn(base.lm)
            return fn(base.lm)

    def locked(self, base: BaseModel, progress: Callable[[str], None] | None = None) -> locked:
        """Context manager acquiring ``base.lock``, telling ``progress`` while it waits for another visitor."""
        return locked(base, progress)
