"""Evaluations of a model state cached on disk, so that a repeated ``grin-ui run`` does not evaluate the same model
on the same data twice (the original model, and its quantized copy per probe kind, do not depend on unlearning).

    key = eval_key(weights_sha, "original", recs, cfg.eval, utility=True)     # or state "nf4:64" for Q(original)
    ev = cache.get(key)                 # None on a miss
    cache.put(key, ev)

The key is the sha256 of everything the result depends on: the exact weights (sha256 of every tensor), the state
("original", or the quantization kind and group size), every record of every set, the evaluation settings, whether
utility metrics were asked for, the grin-ui version and a digest of its code with the torch and
transformers versions (:func:`code_stamp`). Change any of them and the entry
is not found (it ages out). Entries are folders under ``<cache>/evals`` (``$GRIN_UI_CACHE``), held to
``$GRIN_UI_EVAL_CACHE_MB`` megabytes (default 256) with least-recently-used eviction (grin_ui.diskcache);
``GRIN_UI_EVAL_CACHE=0`` or ``grin-ui run --no-cache`` turns it off; ``grin-ui cache --clear`` empties it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from grin_ui.diskcache import evict, touch
from grin_ui.errors import GrinError

DEFAULT_MB = 256.0
FILE = "eval.json"


@functools.cache
def code_stamp() -> str:
    """A digest of grin-ui's own modules and the torch / transformers versions: results computed by other code are
    not reused (a change of summation order alone moves the last digits of a metric, and the weights near a mask's
    threshold)."""
    import torch
    import transformers

    h = hashlib.sha256(f"{torch.__version__} {transformers.__version__}".encode())
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def eval_key(weights_sha: str, state: str, recs: dict, eval_cfg, utility: bool) -> str:
    from grin_ui import __version__

    blob = json.dumps({
        "weights": weights_sha, "state": state, "utility": bool(utility),
        "data": {name: [r.to_dict() for r in rs] for name, rs in recs.items()},
        "eval": asdict(eval_cfg), "versions": [__version__, code_stamp()],
    }, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_bytes() -> int:
    raw = os.environ.get("GRIN_UI_EVAL_CACHE_MB", "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_MB
    except ValueError:
        raise GrinError(f"GRIN_UI_EVAL_CACHE_MB must be a number of megabytes, got '{raw}'.") from None
    return int(max(mb, 0) * 2**20)


class EvalCache:
    """The on-disk evaluation cache under ``root`` (default ``<cache>/evals``); ``enabled=False`` makes every
    lookup a miss and every store a no-op."""

    def __init__(self, root: str | Path | None = None, enabled: bool | None = None):
        from grin_ui.models import cache_dir

        self.root = Path(root) if root is not None else cache_dir() / "evals"
        self.enabled = os.environ.get("GRIN_UI_EVAL_CACHE", "1").strip() != "0" if enabled is None else enabled
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> dict | None:
        if not self.enabled:
            return None
        path = self.root / key / FILE
        try:
            ev = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.misses += 1
            return None
        touch(path.parent)
        self.hits += 1
        return ev

    def put(self, key: str, ev: dict) -> None:
        if not self.enabled:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / key
        work = Path(tempfile.mkdtemp(prefix=".", dir=self.root))  # written aside, then moved: never half an entry
        try:
            (work / FILE).write_text(json.dumps(ev, ensure_ascii=False), encoding="utf-8")
            if target.exists():
                shutil.rmtree(target)
            work.rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        touch(target)
        evict(self.root, cache_bytes(), keep=target)

    def clear(self) -> int:
        """Remove every entry; returns how many there were."""
        if not self.root.is_dir():
            return 0
        n = sum(1 for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        shutil.rmtree(self.root)
        return n
