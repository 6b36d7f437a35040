"""Rebuilding the mask from cached scores, what the sparsity slider does (SPEC §8: ≤ 300 ms).
"""

from __future__ import annotations

import gc
import time

from bench_common import Bench, median

NAME = "mask"
NEEDS = ("scores",)

def bench_mask(lm, res: dict, ctx: dict, sparsities, repeats: int) -> None:
    """Mask recomputation from cached scores (what the sparsity slider does): build_mask + the density grid."""
    from grin_ui.config import MaskConfig
    from grin_ui.influence import scored_parameters
    from grin_ui.mask import build_mask

    scores = ctx["scores"]
    params = scored_parameters(lm.model)
    table = {}
    cold = {}
    for scope in ("global", "tensor", "row"):
        for i, p in enumerate(sparsities):
            ts = []
            for r in range(repeats + (1 if i == 0 else 0)):
                gc.collect()
                t0 = time.perf_counter()
                m = build_mask(params, scores, MaskConfig("grin", p, scope))
                m.block_module_density()
                dt = (time.perf_counter() - t0) * 1000
                if i == 0 and r == 0:
                    cold[scope] = dt  # first mask of this scope (row means are computed once and cached)
                else:
                    ts.append(dt)
            table[f"{scope}@{p:g}"] = median(ts)
    worst = max(table, key=table.get)
    res.update({
        "mask_recompute_ms": table[worst],
        "mask_recompute_worst": worst,
        "mask_recompute_median_ms": median(table.values()),
        "mask_recompute_ms_by_config": table,
        "mask_first_build_ms_by_scope": cold,
    })


def run(b: Bench) -> None:
    sparsities = (0.001, 0.01, 0.05, 0.1) if b.quick else (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
    bench_mask(b.lm, b.res, b.shared, sparsities, 2 if b.quick else 5)
