"""The default walkthrough: grin_ui.journey.run_journey with the defaults and the NF4 probe (SPEC §8: ≤ 120 s).
"""

from __future__ import annotations

import gc
import time

from bench_common import Bench

NAME = "walkthrough"
NEEDS: tuple[str, ...] = ()

def bench_walkthrough(lm, recs, res: dict) -> None:
    from grin_ui.config import RunConfig
    from grin_ui.journey import run_journey

    sets = dict(recs)
    gc.collect()
    t0 = time.perf_counter()
    report, _ = run_journey(lm, sets, RunConfig(probes=("nf4",)))
    res["walkthrough_s"] = time.perf_counter() - t0
    res["walkthrough_stage_s"] = {k: round(v, 2) for k, v in report.get("timings", {}).items()}


def run(b: Bench) -> None:
    bench_walkthrough(b.lm, b.recs, b.res)
