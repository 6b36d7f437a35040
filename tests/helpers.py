"""Small helpers shared by the tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_script(relpath: str):
    """The module of a script that is not part of the package (``benchmarks/run.py``, ``scripts/x.py``), loaded
    from its file under the repository root."""
    path = ROOT / relpath
    spec = importlib.util.spec_from_file_location(f"grin_script_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def without_seconds(x):
    """``x`` with every "seconds" key dropped, recursively: what two runs of the same session must agree on."""
    if isinstance(x, dict):
        return {k: without_seconds(v) for k, v in x.items() if k != "seconds"}
    if isinstance(x, list):
        return [without_seconds(v) for v in x]
    return x


def same_up_to_rounding(a, b, rel: float = 1e-6) -> bool:
    """``a`` and ``b`` equal, floats up to ``rel`` (the same metrics scored in other batch shapes: float sums in
    another order)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_up_to_rounding(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_up_to_rounding(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= rel * max(abs(a), abs(b)) or a == b
    return a == b
