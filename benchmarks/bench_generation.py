"""Batched greedy generation: examples per second at batch 16 against batch 1.
"""

from __future__ import annotations

import gc
import time

from bench_common import Bench, log, median

NAME = "generation"
NEEDS: tuple[str, ...] = ()

def bench_generation(lm, recs, n: int, repeats: int, max_new_tokens: int, res: dict) -> None:
    from grin_ui.generation import generate

    qs = [r.question for r in recs["forget"] + recs["retain"] if r.is_qa][:n]
    times = {16: [], 1: []}
    generate(lm.model, lm.tokenizer, qs[:2], max_new_tokens=4, batch_size=2)  # warm-up
    for r in range(repeats):
        for bs in ((16, 1) if r % 2 == 0 else (1, 16)):
            gc.collect()
            t0 = time.perf_counter()
            generate(lm.model, lm.tokenizer, qs, max_new_tokens=max_new_tokens, batch_size=bs)
            times[bs].append(time.perf_counter() - t0)
            log(f"generation repeat {r + 1}/{repeats}: batch {bs}: {times[bs][-1]:.1f} s")
    b16, b1 = len(qs) / median(times[16]), len(qs) / median(times[1])
    res.update({"gen_batched_examples_per_s": b16, "gen_single_examples_per_s": b1, "gen_batched_speedup": b16 / b1,
                "gen_examples": len(qs), "gen_max_new_tokens": max_new_tokens})


def run(b: Bench) -> None:
    bench_generation(b.lm, b.recs, 16 if b.quick else 33, 1 if b.quick else 2, 64, b.res)
