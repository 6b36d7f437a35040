"""Cooperative cancellation of a long action (SPEC §9: cancel everywhere).

    with cancellable(session.cancel):      # set by the action's owner (grin_ui.store.SessionStore.run_on_model)
        scores = compute_scores(...)       # inner loops call check(): Cancelled once the event is set

The event of the running action is kept in a context variable, so the loops that take time — a generated token, a
batch of gradients or log-probabilities, a training step — can call :func:`check` without every function between
the action and the loop passing a cancel argument along. Outside ``cancellable`` :func:`check` does nothing. The
code that changes weights restores them when Cancelled passes through it (grin_ui.train, grin_ui.pipeline,
grin_ui.store.SessionStore.run_on_model).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from contextvars import ContextVar

from grin_ui.errors import Cancelled

_current: ContextVar[threading.Event | None] = ContextVar("grin_ui_cancel", default=None)


@contextmanager
def cancellable(event: threading.Event | None):
    """Make ``event`` the current action's cancel flag for :func:`check` (in this thread / context)."""
    token = _current.set(event)
    try:
        yield
    finally:
        _current.reset(token)


def requested() -> bool:
    event = _current.get()
    return event is not None and event.is_set()


def check() -> None:
    """Raise :class:`grin_ui.errors.Cancelled` if the current action was asked to stop."""
    if requested():
        raise Cancelled("Cancelled; nothing was changed.")
