"""A size bound with least-recently-used eviction for grin-ui's on-disk caches (the taught models).

    touch(entry)                                   # mark a cache entry (a folder) as just used
    removed = evict(root, max_bytes, keep=entry)   # remove least recently used entries until the rest fits

An entry is a folder directly under ``root``; its last use is the modification time of its ``.last_used`` marker
(else of the folder). Folders whose names start with '.' are work in progress (an entry being written); they are
left alone unless older than a day (left over from a crash), then removed.

The taught-model cache (``<cache>/taught``, grin_ui.teach.teach_cached) is held to ``$GRIN_UI_TAUGHT_CACHE_GB``
gigabytes (default 4: about seven copies of the bundled 135M model in fp32); 0 keeps only the newest entry.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from grin_ui.errors import GrinError

MARKER = ".last_used"
STALE_SECONDS = 24 * 3600
DEFAULT_TAUGHT_CACHE_GB = 4.0


def taught_cache_bytes() -> int:
    """The taught-model cache's bound in bytes, from ``$GRIN_UI_TAUGHT_CACHE_GB`` (default 4)."""
    raw = os.environ.get("GRIN_UI_TAUGHT_CACHE_GB", "").strip()
    try:
        gb = float(raw) if raw else DEFAULT_TAUGHT_CACHE_GB
    except ValueError:
        raise GrinError(f"GRIN_UI_TAUGHT_CACHE_GB must be a number of gigabytes, got '{raw}'.") from None
    if gb < 0:
        raise GrinError(f"GRIN_UI_TAUGHT_CACHE_GB must not be negative, got {gb:g}.")
    return int(gb * 2**30)


def folder_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def touch(entry: Path) -> None:
    """Record that ``entry`` was just used."""
    try:
        (Path(entry) / MARKER).touch()
    except OSError:
        pass


def last_used(entry: Path) -> float:
    for p in (Path(entry) / MARKER, Path(entry)):
        try:
            return p.stat().st_mtime
        except OSError:
            continue
    return 0.0


def evict(root: Path, max_bytes: int, keep: Path | None = None) -> list[Path]:
    """Remove the least recently used entries of ``root`` until the others take at most ``max_bytes``; ``keep``
    is never removed (the entry just written or read). Returns the removed folders."""
    root = Path(root)
    if not root.is_dir():
        return []
    keep = Path(keep).resolve() if keep else None
    entries, removed, now = [], [], time.time()
    for p in root.iterdir():
        if not p.is_dir():
            continue
        if p.name.startswith("."):
            if now - last_used(p) > STALE_SECONDS:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
            continue
        entries.append((last_used(p), p, folder_bytes(p)))
    total = sum(size for _, _, size in entries)
    for _, p, size in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        if keep is not None and p.resolve() == keep:
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
        total -= size
    return removed
