"""Dashboard start-up: `grin-ui serve` in a subprocess until GET / answers 200 (SPEC §8: ≤ 20 s). Runs last: it
drops the benchmark's own model first.
"""

from __future__ import annotations

import gc

from bench_common import Bench, serving

NAME = "serve"
NEEDS: tuple[str, ...] = ()


def bench_serve(model_spec: str, res: dict, timeout: float = 180.0) -> None:
    with serving(model_spec, timeout) as (_, ready):
        res["ready_s"] = ready


def run(b: Bench) -> None:
    b.lm = None  # free the memory before the server loads its own copy
    b.shared.clear()
    gc.collect()
    bench_serve(b.args.model, b.res)
