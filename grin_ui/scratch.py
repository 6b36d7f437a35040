"""Scratch folders for files the dashboard hands to a visitor (the report downloads), bounded and removed.

    folder = scratch_dir(session.id, "report")   # a fresh empty folder; that session's previous one is removed
    clear_all()                                  # remove every scratch folder (also run at interpreter exit)

All folders live under one process-wide root (``grin-ui-scratch-*`` in the system temp directory). A session keeps
one folder per kind (a new export replaces the last one: gradio has copied the files it served into its own cache,
which the app clears with ``gr.Blocks(delete_cache=...)``); at most ``MAX_FOLDERS`` exist at a time, the least
recently created going first; the whole root is removed when the server exits.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

MAX_FOLDERS = 32

_lock = threading.Lock()
_root: Path | None = None
_folders: OrderedDict[tuple[str, str], Path] = OrderedDict()


def root() -> Path:
    """The process's scratch root, created on first use."""
    global _root
    with _lock:
        if _root is None or not _root.is_dir():
            _root = Path(tempfile.mkdtemp(prefix="grin-ui-scratch-"))
        return _root


def scratch_dir(session_id: str, kind: str) -> Path:
    """A new empty folder for ``session_id``'s files of ``kind``; the session's previous one is removed."""
    base = root()
    folder = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=base))
    with _lock:
        old = _folders.pop((session_id, kind), None)
        _folders[(session_id, kind)] = folder
        stale = [old] if old else []
        while len(_folders) > MAX_FOLDERS:
            stale.append(_folders.popitem(last=False)[1])
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return folder


def folders() -> list[Path]:
    """The scratch folders that exist now, oldest first."""
    with _lock:
        return [p for p in _folders.values() if p.is_dir()]


def clear_all() -> None:
    """Remove every scratch folder and the root."""
    global _root
    with _lock:
        path, _root = _root, None
        _folders.clear()
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


atexit.register(clear_all)
