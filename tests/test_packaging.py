"""The wheel: built from a copy of the sources, installed into a fresh virtual environment, it runs `grin-ui run`
with the default utility metrics (which read the shipped assets/) from a folder outside the repository, without
GRIN_UI_ASSETS.

The fresh environment gets its dependencies (torch, transformers, ...) from this interpreter's site-packages
through a .pth file (plain path lines: the project's editable install, a .pth hook, is not carried over), so the
only grin_ui it can import is the installed wheel's.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from tests import tiny

REPO = Path(__file__).resolve().parent.parent


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "grin_ui", src / "grin_ui", ignore=ignore)
    shutil.copytree(REPO / "assets", src / "assets", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp / "dist"), str(src)], check=True, capture_output=True, text=True)
    (wheel,) = (tmp / "dist").glob("grin_ui-*.whl")
    return wheel


def _fresh_venv(tmp: Path, wheel: Path) -> Path:
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    ours = dict.fromkeys(site.getsitepackages() + [sysconfig.get_paths()["purelib"]])
    Path(purelib, "project_deps.pth").write_text("\n".join(ours) + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True,
                   capture_output=True, text=True)
    return venv


def _clean_env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIN_UI_") and k != "PYTHONPATH"}
    env.update(GRIN_UI_CACHE=str(tmp / "cache"), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return env


def test_wheel_ships_assets_and_runs_outside_the_repo(tmp_path, tiny_dir):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {f"grin_ui/{p.relative_to(REPO / 'grin_ui').as_posix()}" for p in (REPO / "grin_ui").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert modules - names == set(), "modules missing from the wheel (add the subpackage to pyproject.toml)"
    shipped = {n for n in names if n.startswith("grin_ui/assets/")}
    for p in (REPO / "assets").rglob("*"):
        if p.is_file():
            assert f"grin_ui/assets/{p.relative_to(REPO / 'assets').as_posix()}" in shipped

    venv = _fresh_venv(tmp_path, wheel)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = _clean_env(tmp_path)
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import grin_ui, grin_ui.examples as e; print(grin_ui.__file__); print(e.assets_dir()); "
         "print(','.join(e.list_examples()))"],
        cwd=work, env=env, check=True, capture_output=True, text=True).stdout.splitlines()
    assert Path(where[0]).is_relative_to(venv) and Path(where[1]).is_relative_to(venv)
    assert set(where[2].split(",")) >= {"fictitious-authors", "real-knowledge", "world-capitals"}

    for name, records in (("forget", tiny.FORGET), ("retain", tiny.RETAIN), ("holdout", tiny.HOLDOUT)):
        (work / f"{name}.jsonl").write_text("\n".join(json.dumps(r.to_dict()) for r in records))
    out = work / "out"
    run = subprocess.run(
        [str(venv / "bin" / "grin-ui"), "run", "--model", str(tiny_dir), "--forget", "forget.jsonl",
         "--retain", "retain.jsonl", "--holdout", "holdout.jsonl", "--out", str(out), "--steps", "4",
         "--probes", "", "--no-stop"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["utility"] is True
    for state in ("original", "unlearned"):
        util = report["eval"][state]["utility"]
        numbers = [v for v in util.values() if isinstance(v, (int, float))]
        assert numbers and all(v == v for v in numbers), util  # measured from the shipped assets, not NaN
