"""The loaded base models of a server: one per model spec, loaded once, shared by every visitor (SPEC §9).

    registry = ModelRegistry(max_models=2)
    base = registry.get("default")            # loads on first use; concurrent callers wait for one load
    with locked(base, progress):              # hold the model's lock while touching its weights
        answer = generate(base.lm.model, base.lm.tokenizer, ["Hi?"])

A visitor never owns a copy of the weights: what it produces lives in its session (grin_ui.store) as a sparse delta
that is applied under the lock and undone afterwards. :meth:`ModelRegistry.clear` drops every loaded model.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from grin_ui.models import DEFAULT_MODEL, LoadedModel, load_model

WAIT_POLL_S = 0.5  # how often a visitor waiting for a busy model is told so


def normalize_spec(spec: str | None) -> str:
    return (spec or "").strip() or DEFAULT_MODEL


@dataclass
class BaseModel:
    """One loaded model shared by every session that uses its spec. Hold ``lock`` while touching the weights."""

    spec: str
    lm: LoadedModel
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)
    shapes: object = None  # grin_ui.memplan.Shapes, counted once on first use (the memory budget's plans)

    @property
    def weights_bytes(self) -> int:
        """Bytes of the weights (tied tensors once)."""
        return sum(p.numel() * p.element_size() for p in self.lm.model.parameters())


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

    def weights_bytes(self) -> int:
        """Bytes of the weights of every loaded model."""
        with self._lock:
            entries = list(self._models.values())
        return sum(e.weights_bytes for e in entries)

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._models)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


class locked:
    """``with locked(base, progress):`` acquire ``base.lock``, telling ``progress`` once while it waits for another
    visitor."""

    def __init__(self, base: BaseModel, progress: Callable[[str], None] | None = None):
        self.base, self.progress = base, progress

    def __enter__(self) -> BaseModel:
        told = False
        while not self.base.lock.acquire(timeout=WAIT_POLL_S):
            if self.progress and not told:
                self.progress("Waiting for the model: another visitor is using it")
                told = True
        self.base.last_used = time.monotonic()
        return self.base

    def __exit__(self, *exc) -> bool:
        self.base.lock.release()
        return False
