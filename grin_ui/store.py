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

from grin_ui import memplan
from grin_ui.budget import MemoryBudget, tensor_bytes, trim_heap
from grin_ui.cancel import cancellable
from grin_ui.config import RunConfig
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
    client: str = ""  # who created it (the visitor's address); at most max_per_client sessions each
    sets: dict[str, Any] = field(default_factory=dict)  # name -> data.ExampleSet
    token_counts: dict[str, list[int]] = field(default_factory=dict)
    scores: Any = None  # influence.Scores
    mask: Any = None  # mask.Mask for the current sparsity / scope
    mask_settings: dict = field(default_factory=dict)
    result: Any = None  # pipeline.GrinResult of the last unlearning run
    delta: Any = None  # delta.SparseDelta: the unlearned weights
    run_config: Any = None  # config.RunConfig of the last run
    history: list[dict] = field(default_factory=list)  # live loss history of the current / last run
    baselines: dict[str, dict] = field(default_factory=dict)  # label -> a baseline's runs over seeds, summarized
    evals: dict[str, dict] = field(default_factory=dict)  # "original" / "unlearned" -> evaluate_sets output
    probes: dict[str, dict] = field(default_factory=dict)  # kind -> journey.probe output
    quantized_original: dict[str, dict] = field(default_factory=dict)  # probe key -> Q(original)'s evaluation
    relearn: dict | None = None  # journey.relearn output (the relearning probe) for the current delta
    recovery_demo: dict | None = None  # grin_ui.recovery_demo.compare output for the current model and data
    dynamics_demo: dict | None = None  # grin_ui.distribution_demo.compare output for the current model
    timings: dict[str, float] = field(default_factory=dict)  # seconds of steps done outside a run (scoring)
    teach: dict = field(default_factory=dict)  # knowledge checks and the taught model's directory
    notices: list[str] = field(default_factory=list)  # things the visitor should be told once
    cancel: threading.Event = field(default_factory=threading.Event)
    busy: threading.Lock = field(default_factory=threading.Lock)
    mask_lock: threading.Lock = field(default_factory=threading.Lock)  # one mask rebuild at a time per visitor
    last_used: float = field(default_factory=time.monotonic)

    # ------------------------------------------------------------------ state transitions

    def clear_evaluations(self) -> None:
        self.evals = {}
        self.probes = {}
        self.quantized_original = {}  # survives a new unlearning run (clear_unlearned), not new data or model
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
        self.dynamics_demo = None
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
        cancel flag is cleared when it starts and when it ends."""
        if not self.busy.acquire(blocking=False):
            raise GrinError(f"Another action of yours is still running; wait for it or cancel it before the {what}.")
        self.cancel.clear()
        try:
            yield self
        finally:
            self.cancel.clear()  # a cancel that arrived late must not stop the next action
            self.busy.release()

    def pop_notices(self) -> list[str]:
        out, self.notices = self.notices, []
        return out

    def held_bytes(self) -> int:
        """Bytes of the tensors this session keeps (shared storage once)."""
        return tensor_bytes(self.scores, self.mask, self.result, self.delta, self.evals, self.probes)

    def release_scores(self) -> int:
        """Drop the influence scores (recomputable) also from the last result; returns the bytes freed."""
        in_result = getattr(self.result, "scores", None) is not None
        if self.scores is None and not in_result:
            return 0
        before = self.held_bytes()
        self.scores = None
        if in_result:
            self.result.scores = None
        self.notices.append("Your influence scores were released to free memory for other visitors; recompute them "
                            "in step 4 to change the mask.")
        return before - self.held_bytes()


class SessionStore:
    """All sessions of a server, keyed by an id (the browser session), plus the shared model registry.

    Limits (SPEC §9): at most ``max_sessions`` sessions, at most ``max_per_client`` of them created by one client
    (one address: a client beyond it loses its own least recently used idle session, never another visitor's); a
    session idle for ``idle_timeout_s`` is dropped (:meth:`sweep`, run by :meth:`start_janitor` on a server). At most
    ``max_scored`` sessions keep influence scores (as large as the scored weights). With a ``budget``
    (grin_ui.budget.MemoryBudget) every action on a model reserves what its memory plan needs first, waiting in the
    budget's queue or refused when it cannot fit, and what the sessions keep is released (scores first, then whole
    idle sessions) when the budget is exceeded.
    """

    def __init__(self, default_model: str = DEFAULT_MODEL, max_sessions: int = 16, max_scored: int = 4,
                 registry: ModelRegistry | None = None, budget: MemoryBudget | None = None, max_per_client: int = 8,
                 idle_timeout_s: float = 1800.0):
        self.default_model = normalize_spec(default_model)
        self.max_sessions = max_sessions
        self.max_scored = max_scored
        self.max_per_client = max_per_client
        self.idle_timeout_s = idle_timeout_s
        self.budget = budget
        self.models = registry if registry is not None else ModelRegistry()
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()
        self._janitor: threading.Thread | None = None
        self._stop = threading.Event()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, sid: str) -> bool:
        return sid in self._sessions

    def get(self, sid: str | None, client: str = "") -> Session:
        """The session ``sid``, created (with the default model) if new; marks it most recently used. ``client``:
        who asks (the visitor's address), for the per-client limit."""
        if not sid:
            raise GrinError("This request carries no session id; reload the page.")
        with self._lock:
            s = self._sessions.get(sid)
            if s is None:
                if client:
                    self._evict(lambda x: x.client == client, self.max_per_client - 1)
                self._evict(lambda x: True, self.max_sessions - 1)
                s = Session(sid, model_spec=self.default_model, client=client)
                self._sessions[sid] = s
            else:
                self._sessions.move_to_end(sid)
            s.last_used = time.monotonic()
            return s

    def _evict(self, which: Callable[[Session], bool], keep_at_most: int) -> None:
        """Drop the least recently used idle sessions among ``which`` until at most ``keep_at_most`` remain (busy
        sessions are never dropped). Holds ``self._lock``."""
        mine = [sid for sid, s in self._sessions.items() if which(s)]  # oldest first
        excess = len(mine) - keep_at_most
        for sid in mine:
            if excess <= 0:
                return
            if not self._sessions[sid].busy.locked():
                del self._sessions[sid]
                excess -= 1

    def sweep(self, now: float | None = None) -> list[str]:
        """Drop the idle sessions not used for ``idle_timeout_s``; returns their ids."""
        now = time.monotonic() if now is None else now
        with self._lock:
            old = [sid for sid, s in self._sessions.items()
                   if now - s.last_used > self.idle_timeout_s and not s.busy.locked()]
            for sid in old:
                del self._sessions[sid]
            return old

    def start_janitor(self, every_s: float = 60.0) -> None:
        """Sweep idle sessions every ``every_s`` seconds in a daemon thread (it sleeps in between: no CPU)."""
        if self._janitor is not None:
            return

        def loop():
            while not self._stop.wait(every_s):
                self.sweep()

        self._janitor = threading.Thread(target=loop, name="grin-ui-janitor", daemon=True)
        self._janitor.start()

    def leave(self, sid: str | None) -> None:
        """The visitor closed the page: cancel what it is running and drop its session."""
        with self._lock:
            s = self._sessions.pop(sid, None) if sid else None
        if s is not None:
            s.cancel.set()

    def drop(self, sid: str) -> None:
        with self._lock:
            self._sessions.pop(sid, None)

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()
        self._stop.set()

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    # ------------------------------------------------------------------ memory

    def held_bytes(self) -> int:
        """Bytes held for the visitors: the loaded models' weights and what every session keeps."""
        with self._lock:
            sessions = list(self._sessions.values())
        return self.models.weights_bytes() + tensor_bytes(*[(s.scores, s.mask, s.result, s.delta, s.evals, s.probes)
                                                             for s in sessions])

    def release_bytes(self, n: int, keep: Session | None = None) -> int:
        """Free about ``n`` bytes of what sessions keep, least recently used first, never ``keep``'s: influence
        scores first (recomputable), then whole idle sessions. Returns the bytes freed."""
        freed = 0
        with self._lock:  # a session in the middle of an action keeps what it is using
            order = [s for s in self._sessions.values() if s is not keep and not s.busy.locked()]
        for s in order:
            if freed >= n:
                return freed
            freed += s.release_scores()
        for s in order:
            if freed >= n:
                break
            with self._lock:
                if s.id in self._sessions and not s.busy.locked():
                    before = s.held_bytes()
                    del self._sessions[s.id]
                    freed += before
        return freed

    def store_scores(self, session: Session, scores) -> None:
        """Keep ``scores`` in ``session``, releasing other sessions' scores beyond ``max_scored`` (and beyond the
        memory budget)."""
        session.scores = scores
        with self._lock:
            holders = [s for s in self._sessions.values() if s.scores is not None and s is not session]
        idle = [s for s in holders if not s.busy.locked()]  # least recently used first; never one in an action
        for s in idle[:max(0, len(holders) + 1 - self.max_scored)]:
            s.release_scores()
        self.fit_budget(session)

    def fit_budget(self, session: Session | None = None) -> None:
        """Release other sessions' state while what is held exceeds the budget."""
        if self.budget is not None:
            over = self.held_bytes() + self.budget.reserved - self.budget.total
            if over > 0:
                self.release_bytes(over, keep=session)

    def need_bytes(self, session: Session, action: str) -> int:
        """What ``action`` on the session's model needs beyond what is held (grin_ui.memplan), for sequences as
        long as the session's longest example plus the generated answer."""
        base = self.base(session)
        if base.shapes is None:
            base.shapes = memplan.Shapes.of(base.lm.model.config)
        run = RunConfig()
        longest = max((c for counts in session.token_counts.values() for c in counts), default=None)
        if longest is not None:
            run.limits.max_tokens = min(run.limits.max_tokens, longest + run.eval.max_new_tokens)
        dtype = next(base.lm.model.parameters()).dtype
        plan = memplan.plan_memory(base.lm.model.config, dtype, shapes=base.shapes, run=run)
        return plan.transient(action)

    @contextmanager
    def reserved(self, session: Session, action: str | None, progress: Callable[[str], None] | None = None):
        """Hold the budget's share for ``action`` (no-op without a budget or an action)."""
        if self.budget is None or action is None:
            yield
            return
        need = self.need_bytes(session, action)
        with self.budget.reserve(need, action, held=self.held_bytes, fixed=self.models.weights_bytes,
                                 release=lambda n: self.release_bytes(n, keep=session), progress=progress,
                                 cancel=session.cancel):
            yield

    # ------------------------------------------------------------------ working on the weights

    def base(self, session: Session, progress: Callable[[str], None] | None = None) -> BaseModel:
        return self.models.get(session.model_spec, progress)

    def run_on_model(self, session: Session, fn: Callable[[LoadedModel], Any], *, unlearned: bool = False,
                     delta=None, progress: Callable[[str], None] | None = None, action: str | None = "evaluation") -> Any:
        """Call ``fn(lm)`` on the session's base model while holding its lock.

        ``unlearned=True`` applies the session's delta (or ``delta``) for the call and undoes it afterwards, even if
        ``fn`` raises. Without it, ``fn`` sees the original weights; if ``fn`` changes them it must restore them
        itself before returning. ``progress`` hears about loading and about waiting for another visitor or for
        memory. ``action`` (a grin_ui.memplan action: scoring, unlearning, probes, teaching, evaluation; None: no
        reservation) is what the budget sets aside. ``session.cancel`` stops ``fn`` at its next check
        (grin_ui.cancel: grin_ui.errors.Cancelled); gradients left behind are dropped.
        """
        base = self.base(session, progress)
        if unlearned:
            delta = delta if delta is not None else session.delta
            if delta is None:
                session.require("delta")
        with locked(base, progress), self.reserved(session, action, progress), cancellable(session.cancel):
            try:
                if unlearned:
                    with delta.applied(base.lm.model):
                        return fn(base.lm)
                return fn(base.lm)
            except BaseException:
                for p in base.lm.model.parameters():
                    p.grad = None
                raise
            finally:
                trim_heap()

    def locked(self, base: BaseModel, progress: Callable[[str], None] | None = None) -> locked:
        """Context manager acquiring ``base.lock``, telling ``progress`` while it waits for another visitor."""
        return locked(base, progress)
