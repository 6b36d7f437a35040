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
