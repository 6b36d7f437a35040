"""How many CPU threads torch uses: ``$GRIN_UI_THREADS``, else what ``$OMP_NUM_THREADS`` gave torch, else the
physical cores this process may run on.

    apply_threads()          # the CLI and the dashboard call it once at start; returns the number set

Two torch processes with a thread per core each, sharing the cores, were 5–10× slower than with one thread each:
when you run two heavy jobs at once (two CLI runs, a server and a benchmark), give each ``GRIN_UI_THREADS=1``.
"""

from __future__ import annotations

import os

import psutil
import torch

from grin_ui.errors import GrinError


def configured_threads() -> int:
    """$GRIN_UI_THREADS (a positive integer), else torch's setting when $OMP_NUM_THREADS is set, else the physical
    cores (at most the CPUs this process may use)."""
    raw = os.environ.get("GRIN_UI_THREADS", "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 1:
            raise GrinError(f"GRIN_UI_THREADS must be a positive whole number, not '{raw}'.")
        return n
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        return torch.get_num_threads()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(psutil.cpu_count(logical=False) or usable, usable))


def apply_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to ``n`` (default :func:`configured_threads`); returns it."""
    n = configured_threads() if n is None else n
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
