"""GRI scoring time against the plain forward + backward passes over the same batches (SPEC §8: ≤ 1.15).

Leaves the scores in ``b.shared["scores"]`` for the mask and step sections.
"""

from __future__ import annotations

import gc
import time

from bench_common import Bench, log, median, requires_grad_only, score_batches

NAME = "scoring"
NEEDS: tuple[str, ...] = ()

def bench_scoring(lm, recs, repeats: int, res: dict, ctx: dict) -> None:
    """GRI scoring vs the plain forward + backward passes over the same batches."""
    from grin_ui.config import ScoreConfig
    from grin_ui.data import encode
    from grin_ui.influence import ScoreIndex, compute_scores, scored_parameters

    model, tok = lm.model, lm.tokenizer
    cfg = ScoreConfig()
    forget, retain = recs["forget"], recs["retain"]
    fb, rb = score_batches(tok, forget, retain, cfg.batch_size)
    scored = {id(p) for _, p in scored_parameters(model, cfg)}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.eval()

    def plain(keep):
        requires_grad_only(model, keep)
        t0 = time.perf_counter()
        for group in (fb, rb):  # gradients accumulate within a pass, like G_f and G_r
            for b in group:
                model(**b).loss.backward()
            for p in model.parameters():
                p.grad = None
        dt = time.perf_counter() - t0
        requires_grad_only(model, set())
        return dt

    def score():
        t0 = time.perf_counter()
        s = compute_scores(model, tok, forget, retain, cfg)
        dt = time.perf_counter() - t0
        ctx["scores"] = s
        return dt

    variants = {"plain_all": lambda: plain(None), "plain_scored": lambda: plain(scored), "score": score}
    times: dict[str, list[float]] = {k: [] for k in variants}
    plain(None)  # warm-up (allocator, kernels)
    names = list(variants)
    for r in range(repeats):
        for k in names[r % len(names):] + names[: r % len(names)]:
            if k == "score":
                ctx.pop("scores", None)  # free the previous scores first
            gc.collect()
            times[k].append(variants[k]())
            log(f"scoring repeat {r + 1}/{repeats}: {k} {times[k][-1]:.2f} s")
    for n, p in model.named_parameters():
        p.requires_grad_(flags[n])
    # phases of compute_scores outside the passes: tokenization and the binned index
    enc, idx = [], []
    for _ in range(max(1, min(repeats, 3))):
        t0 = time.perf_counter()
        encode(forget, tok, 256), encode(retain, tok, 256)
        enc.append(time.perf_counter() - t0)
        gc.collect()
        t0 = time.perf_counter()
        ScoreIndex.build(ctx["scores"].scores)
        idx.append(time.perf_counter() - t0)
    med = {k: median(v) for k, v in times.items()}
    res.update({
        "scoring_time_ratio": med["score"] / med["plain_all"],
        "scoring_time_ratio_vs_scored_grads": med["score"] / med["plain_scored"],
        "scoring_s": med["score"],
        "plain_fwd_bwd_all_params_s": med["plain_all"],
        "plain_fwd_bwd_scored_params_s": med["plain_scored"],
        "scoring_phase_encode_s": median(enc),
        "scoring_phase_index_build_s": median(idx),
        "scoring_phase_passes_and_rest_s": med["score"] - median(enc) - median(idx),
        "scoring_examples": len(forget) + len(retain),
        "scoring_batches": len(fb) + len(rb),
        "scoring_tokens": int(sum(b["attention_mask"].sum() for b in fb + rb)),
        "scoring_padded_tokens": int(sum(b["input_ids"].numel() for b in fb + rb)),
        "scored_weights": ctx["scores"].total,
        "scoring_repeats": repeats,
        "scoring_times_s": times,
    })


def run(b: Bench) -> None:
    bench_scoring(b.lm, b.recs, 2 if b.quick else 5, b.res, b.shared)
