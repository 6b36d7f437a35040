"""The server's memory budget (SPEC §9): what a dashboard server holds for its visitors is accounted, and an action
that would not fit waits in a queue or is refused with a message — never an out-of-memory kill.

    budget = MemoryBudget.from_env()          # GRIN_UI_MEMORY_GB, else 80 % of the memory available at start
    with budget.reserve(need, "scoring", held=store.held_bytes, release=store.release_bytes, progress=say):
        ...                                    # the action runs with ``need`` bytes set aside for it

Accounting, in bytes:
  * held — the loaded base models' weights plus what every session keeps (scores, mask, delta, ...), counted tensor
    by tensor with shared storage once (:func:`tensor_bytes`); the caller passes it as a function because it
    changes while a request waits;
  * reserved — the transient need of every action admitted and still running: its peak from the model's memory
    plan (grin_ui.memplan) minus what ``held`` already counts (the weights, the session's scores);
  * free = budget − held − reserved.
An action is admitted when it is first in the queue and its need fits in free. Before it waits, ``release`` is asked
to free what can be recomputed (other visitors' influence scores, least recently used first). While it waits, its
visitor hears "the server is busy: 1.2 GB needed, 0.4 GB free; your request is queued at position 2" and can
cancel. An action that could not fit even with nothing else running and everything releasable released is refused at
once ("this action needs ... here").
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import threading
from contextlib import contextmanager
from typing import Any, Callable

import psutil
import torch

from grin_ui.errors import Cancelled, GrinError

DEFAULT_FRACTION = 0.8  # of the memory available when the server starts
WAIT_POLL_S = 0.25


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def trim_heap() -> None:
    """Give the heap memory freed by an action back to the operating system (glibc ``malloc_trim``; elsewhere a
    no-op), so that the process's resident memory follows what is actually held."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def tensor_bytes(*objects: Any, depth: int = 6) -> int:
    """Bytes of the tensors reachable from ``objects`` (dicts, lists, tuples, dataclasses and plain objects, to
    ``depth`` levels), each storage counted once. Meta tensors count nothing."""
    seen_storage: set[tuple[str, int]] = set()
    seen_obj: set[int] = set()
    total = 0

    def walk(o: Any, d: int) -> None:
        nonlocal total
        if o is None or isinstance(o, (str, bytes, int, float, bool, threading.Event)) or d < 0:
            return
        if isinstance(o, torch.Tensor):
            if o.device.type == "meta":
                return
            st = o.untyped_storage()
            key = (str(o.device), st.data_ptr())
            if key not in seen_storage:
                seen_storage.add(key)
                total += st.nbytes()
            return
        if id(o) in seen_obj:
            return
        seen_obj.add(id(o))
        if isinstance(o, dict):
            for v in o.values():
                walk(v, d - 1)
        elif isinstance(o, (list, tuple, set)):
            for v in o:
                walk(v, d - 1)
        elif dataclasses.is_dataclass(o) and not isinstance(o, type):
            for f in dataclasses.fields(o):
                walk(getattr(o, f.name, None), d - 1)
        elif hasattr(o, "__dict__") and not isinstance(o, type):
            for v in vars(o).values():
                walk(v, d - 1)

    for o in objects:
        walk(o, depth)
    return total


class MemoryBudget:
    """Bytes the server may hold for its visitors, and the queue of actions waiting for some of them."""

    def __init__(self, total_bytes: int):
        if total_bytes <= 0:
            raise GrinError("The memory budget must be positive.")
        self.total = int(total_bytes)
        self.reserved = 0
        self.peak_reserved = 0
        self._queue: list[object] = []
        self._cond = threading.Condition()

    @classmethod
    def from_env(cls, gigabytes: float | None = None, fraction: float = DEFAULT_FRACTION) -> MemoryBudget:
        """``gigabytes`` (or $GRIN_UI_MEMORY_GB), else ``fraction`` of the memory available now."""
        if gigabytes is None and os.environ.get("GRIN_UI_MEMORY_GB"):
            try:
                gigabytes = float(os.environ["GRIN_UI_MEMORY_GB"])
            except ValueError:
                raise GrinError("GRIN_UI_MEMORY_GB must be a number of gigabytes.") from None
        if gigabytes is not None:
            return cls(int(gigabytes * 1e9))
        return cls(int(fraction * psutil.virtual_memory().available))

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    @contextmanager
    def reserve(self, need: int, what: str, *, held: Callable[[], int], fixed: Callable[[], int] | None = None,
                release: Callable[[int], int] | None = None, progress: Callable[[str], None] | None = None,
                cancel: threading.Event | None = None):
        """Set ``need`` bytes aside for the action ``what`` while the block runs (see the module docstring).

        ``held()``: bytes held now; ``fixed()``: the part of it nothing can release (the models' weights, default:
        all of ``held``); ``release(n)``: free about ``n`` bytes of recomputable state, return the bytes freed.
        Raises GrinError when the action cannot fit here, grin_ui.errors.Cancelled when ``cancel`` is set while
        it waits."""
        need = max(0, int(need))
        fixed = fixed or held
        if need > self.total - fixed():
            raise GrinError(f"This model is too large for the {what} on this server: it needs about {gb(need)} "
                            f"beyond the loaded models, and the server's memory budget leaves {gb(self.total - fixed())}"
                            " (set GRIN_UI_MEMORY_GB or run grin-ui on a larger machine).")
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
        try:
            told = None
            with self._cond:
                while True:
                    free = self.total - held() - self.reserved
                    first = self._queue[0] is ticket
                    if first and need <= free:
                        break
                    if first and release is not None and release(need - free) > 0:
                        continue
                    if first and self.reserved == 0:  # nothing will be given back: it cannot fit here now
                        raise GrinError(f"Not enough memory for the {what}: it needs about {gb(need)} and "
                                        f"{gb(max(free, 0))} of the server's budget is free with what visitors keep "
                                        "now. Try again later or on a larger machine.")
                    pos = self._queue.index(ticket) + 1
                    if progress is not None and told != pos:
                        progress(f"The server is busy: {gb(need)} needed, {gb(max(free, 0))} free; your request is "
                                 f"queued at position {pos}")
                        told = pos
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("Cancelled while waiting for memory; nothing was changed.")
                    self._cond.wait(WAIT_POLL_S)
                self._queue.remove(ticket)
                self.reserved += need
                self.peak_reserved = max(self.peak_reserved, self.reserved)
                self._cond.notify_all()
        except BaseException:
            with self._cond:
                if ticket in self._queue:
                    self._queue.remove(ticket)
                self._cond.notify_all()
            raise
        try:
            yield
        finally:
            with self._cond:
                self.reserved -= need
                self._cond.notify_all()
