"""Re-running a recorded session from its report (SPEC §10 ``grin-ui run --config report.json``).

    rep = read_report("out/report.json")
    cfg = RunConfig.from_dict(rep["config"])                 # same seed and settings
    paths = data_paths(rep, {"forget": "f.jsonl"}, "out")    # the files given, else the ones the report recorded
    check_data(rep, sets)                                    # GrinError naming the set whose content differs
    print(rerun_command("default", {"forget": "forget.jsonl"}))

A report records, per data set, the sha256 of its records (and, when the CLI wrote it, the file it read); the
dashboard writes its sets as JSON lines beside the report so that the same command works for both.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from grin_ui.errors import GrinError
from grin_ui.examples import SET_NAMES

RERUN_OUT = "rerun"  # output folder named in the command a report shows


def rerun_command(model_spec: str, files: dict[str, str], *, taught: bool = False, report: str = "report.json",
                  out: str = RERUN_OUT) -> str:
    """The ``grin-ui run --config`` command line that re-runs a session: its model, its data files, its report."""
    parts = ["grin-ui", "run", "--config", report, "--model", model_spec]
    if taught:
        parts.append("--teach")
    for name in SET_NAMES:
        if name in files:
            parts += [f"--{name}", str(files[name])]
    parts += ["--out", out]
    return " ".join(shlex.quote(p) for p in parts)


def recorded_model(rep: dict) -> tuple[str, bool]:
    """(model spec to load, whether to teach it first) as the report recorded them."""
    m = rep.get("model") or {}
    if m.get("taught_from"):
        return m["taught_from"], True
    return m.get("spec") or "default", False


def data_paths(rep: dict, given: dict[str, str], report_dir: str | Path = ".") -> dict[str, str]:
    """The file of every set the report recorded: the one given, else the file the report names (relative names
    are read from the report's folder). A set the recorded session did not have is refused."""
    recorded = rep.get("data") or {}
    extra = [n for n in given if n not in recorded]
    if extra:
        raise GrinError(f"The recorded session had no {extra[0]} set; leave out --{extra[0]} to re-run it.")
    paths = {}
    for name, info in recorded.items():
        if given.get(name):
            paths[name] = given[name]
            continue
        f = info.get("file")
        p = Path(report_dir) / f if f and not os.path.isabs(f) else (Path(f) if f else None)
        if p is None or not p.is_file():
            raise GrinError(f"The recorded session had a {name} set ({info.get('n')} examples from "
                            f"{info.get('source')}); give it with --{name} FILE.")
        paths[name] = str(p)
    return paths


def check_data(rep: dict, sets: dict) -> None:
    """GrinError naming the first set whose content (sha256 of its records) differs from the recorded one."""
    recorded = rep.get("data") or {}
    for name, es in sets.items():
        want = (recorded.get(name) or {}).get("sha256")
        got = es.sha256()
        if want and want != got:
            raise GrinError(f"The {name} set differs from the recorded one (sha256 {got[:12]}… instead of "
                            f"{want[:12]}…, {len(es)} examples instead of {recorded[name].get('n')}); give the same "
                            f"{name} file to reproduce the session.")


def write_sets(sets: dict, out_dir: str | Path) -> dict[str, str]:
    """Write each set's records as ``<name>.jsonl`` into ``out_dir``; returns name -> file name (for the command)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in SET_NAMES:
        es = sets.get(name)
        if es is None:
            continue
        text = "\n".join(json.dumps(r.to_dict(), ensure_ascii=False) for r in es.records) + "\n"
        (out / f"{name}.jsonl").write_text(text, encoding="utf-8")
        files[name] = f"{name}.jsonl"
    return files
