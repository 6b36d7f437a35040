"""Built-in example sets: every folder of ``assets/examples/`` holding forget/retain/holdout files.

    names = list_examples()                  # e.g. ["fictitious-authors", "real-knowledge"]
    sets = load_example("real-knowledge")    # {"forget": ExampleSet, "retain": ExampleSet, ...}
"""

from __future__ import annotations

import os
from pathlib import Path

from grin_ui.config import DataLimits
from grin_ui.data import EXTENSIONS, ExampleSet, load_file
from grin_ui.errors import GrinError

SET_NAMES = ("forget", "retain", "holdout", "neighbours")


def assets_dir() -> Path:
    """``$GRIN_UI_ASSETS``, else ``grin_ui/assets`` (installed from a wheel: pyproject ships ``assets/`` there as
    package data), else the ``assets/`` folder next to the package (repository layout)."""
    if os.environ.get("GRIN_UI_ASSETS"):
        return Path(os.environ["GRIN_UI_ASSETS"])
    here = Path(__file__).resolve().parent
    installed = here / "assets"
    return installed if installed.is_dir() else here.parent / "assets"


def examples_dir() -> Path:
    return assets_dir() / "examples"


def _set_files(folder: Path) -> dict[str, Path]:
    found = {}
    for f in sorted(folder.iterdir()):
        if f.stem in SET_NAMES and f.suffix in EXTENSIONS:
            found[f.stem] = f
    return found


def list_examples() -> list[str]:
    root = examples_dir()
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if d.is_dir() and "forget" in _set_files(d))


def load_example(name: str, limits: DataLimits | None = None) -> dict[str, ExampleSet]:
    folder = examples_dir() / name
    if name not in list_examples():
        raise GrinError(f"Unknown built-in example '{name}'; available: {', '.join(list_examples()) or 'none'}.")
    return {k: load_file(p, limits, name=f"{name}/{p.name}") for k, p in _set_files(folder).items()}
