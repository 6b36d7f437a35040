"""Batched greedy generation: examples per second at batch 16 against batch 1; and at the evaluation's batch size
(``EvalConfig.gen_batch_size``) on every question of the example, with and without the prompts' shared opening run
once per batch (grin_ui.prefix).
"""

from __future__ import annotations

import gc
import time

from bench_common import Bench, log, median

NAME = "generation"
NEEDS: tuple[str, ...] = ()


def _timed(fn) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_generation(lm, recs, n: int, repeats: int, max_new_tokens: int, res: dict) -> None:
    from grin_ui import prefix
    from grin_ui.config import EvalConfig
    from grin_ui.generation import generate

    every = [r.question for name in ("forget", "retain", "holdout") for r in recs.get(name, []) if r.is_qa]
    qs = [r.question for r in recs["forget"] + recs["retain"] if r.is_qa][:n]
    big = EvalConfig().gen_batch_size
    kept = prefix.MIN_PREFIX

    def run(key):
        prefix.MIN_PREFIX = 10**9 if key == "eval-plain" else kept  # plain: every row runs the shared opening
        try:
            if key in (16, 1):
                generate(lm.model, lm.tokenizer, qs, max_new_tokens=max_new_tokens, batch_size=key)
            else:
                generate(lm.model, lm.tokenizer, every, max_new_tokens=max_new_tokens, batch_size=big)
        finally:
            prefix.MIN_PREFIX = kept

    generate(lm.model, lm.tokenizer, qs[:2], max_new_tokens=4, batch_size=2)  # warm-up
    keys = [16, 1, "eval", "eval-plain"]
    times: dict = {k: [] for k in keys}
    for r in range(repeats):
        for key in keys[r % len(keys):] + keys[: r % len(keys)]:
            times[key].append(_timed(lambda: run(key)))
            log(f"generation repeat {r + 1}/{repeats}: {key}: {times[key][-1]:.1f} s")
    b16, b1 = len(qs) / median(times[16]), len(qs) / median(times[1])
    ev, plain = (len(every) / median(times[k]) for k in ("eval", "eval-plain"))
    res.update({"gen_batched_examples_per_s": b16, "gen_single_examples_per_s": b1, "gen_batched_speedup": b16 / b1,
                "gen_eval_batch_examples_per_s": ev, "gen_eval_batch_plain_examples_per_s": plain,
                "gen_shared_opening_speedup": ev / plain, "gen_eval_batch_size": big, "gen_eval_examples": len(every),
                "gen_examples": len(qs), "gen_max_new_tokens": max_new_tokens})


def run(b: Bench) -> None:
    bench_generation(b.lm, b.recs, 16 if b.quick else 33, 2 if b.quick else 3, 64, b.res)
