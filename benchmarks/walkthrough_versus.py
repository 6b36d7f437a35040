"""The default walkthrough (journey.run_journey, defaults, NF4 probe) of today's code against an earlier commit's,
run alternately in fresh processes on the same machine, so that the machine's drifting speed falls on both alike.

    .venv/bin/python benchmarks/walkthrough_versus.py --rev 9859039            # 2 rounds: old, new, old, new
    .venv/bin/python benchmarks/walkthrough_versus.py --rev HEAD~3 --rounds 3 --example real-knowledge

The earlier commit is checked out with ``git worktree`` into a temporary folder (removed afterwards) and run with
this checkout's Python environment. Each run prints one JSON line: total seconds, the stage timings of the report,
the step it stopped at and a few results (the two versions should agree on those up to float rounding); the last
line gives the median total of each version and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ONE_RUN = """
import json, sys, time
from grin_ui.config import RunConfig
from grin_ui.examples import load_example
from grin_ui.journey import run_journey
from grin_ui.models import load_model
lm = load_model("default", device="cpu")
sets = {k: list(v.records) for k, v in load_example(sys.argv[1]).items()}
t0 = time.perf_counter()
report, res = run_journey(lm, sets, RunConfig(probes=("nf4",)))
after = report["eval"]["unlearned"]
print(json.dumps({"total_s": round(time.perf_counter() - t0, 1), "stopped_at": report["stopping"]["stopped_at"],
                  **{k: round(v, 1) for k, v in report["timings"].items() if k != "total"},
                  "forget_hit": after["forget"]["answer_hit_rate"], "retain_hit": after["retain"]["answer_hit_rate"],
                  "loss_auc": after["mia"]["loss_auc"]}))
"""


def run(folder: Path, example: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(folder)}
    out = subprocess.run([sys.executable, "-c", ONE_RUN, example], cwd=folder, env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rev", required=True, help="the earlier commit")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--example", default="real-knowledge")
    args = p.parse_args()
    old = Path(tempfile.mkdtemp()) / "earlier"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(old), args.rev], cwd=ROOT, check=True)
    totals: dict[str, list[float]] = {"earlier": [], "today": []}
    try:
        for _ in range(args.rounds):
            for label, folder in (("earlier", old), ("today", ROOT)):
                res = run(folder, args.example)
                totals[label].append(res["total_s"])
                print(json.dumps({"version": label, **res}), flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, check=True)
    a, b = statistics.median(totals["earlier"]), statistics.median(totals["today"])
    print(json.dumps({"median_earlier_s": a, "median_today_s": b, "ratio": round(b / a, 3)}))


if __name__ == "__main__":
    main()
