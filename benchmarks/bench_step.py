"""A masked unlearning step (GRIN mask, 1 %, global scope, where the weight gradients of matrices with a small share
of selected entries are sampled products at those entries; and at the row scope, where only the selected rows'
weight gradients are computed: grin_ui.rowgrad) against an unmasked one and plain full-model AdamW (SPEC §8: ≤ 0.85 global,
issue targets ≤ 0.8 global and ≤ 0.7 row), and the optimizer state per masked entry (2 fp32 moments = 8 bytes).
"""

from __future__ import annotations

import gc
import time

import torch

from bench_common import Bench, log, median

NAME = "step"
NEEDS = ("scores",)

def bench_step(lm, recs, steps: int, repeats: int, res: dict, ctx: dict) -> None:
    """Masked unlearning step (GRIN mask, 1 %) vs unmasked (selector none) vs plain full-model AdamW."""
    from grin_ui.config import MaskConfig, UnlearnConfig
    from grin_ui.influence import scored_parameters
    from grin_ui.mask import build_mask
    from grin_ui.objectives import OBJECTIVES
    from grin_ui.train import MaskedAdamW, prepare_unlearn, train_masked, unlearn

    model, tok = lm.model, lm.tokenizer
    scores = ctx["scores"]
    params = scored_parameters(model)
    cfg = UnlearnConfig(steps=steps)
    data = prepare_unlearn(model, tok, recs["forget"], recs["retain"], cfg, seed=0)
    masks = {"masked": build_mask(params, scores, MaskConfig("grin", 0.01, "global")),
             "masked-row": build_mask(params, scores, MaskConfig("grin", 0.01, "row")),
             "unmasked": build_mask(params, scores, MaskConfig("none", 0.01, "global"))}
    masks["masked-dense"] = masks["masked"]
    stats: dict[str, dict] = {}

    def run_masked(key):
        import grin_ui.train as T

        real = T.row_gradients
        if key == "masked-dense":  # the same mask, every weight gradient the dense product (no sampled product)
            T.row_gradients = lambda model, masks: real(model, masks, max_entry_share=0.0)
        try:
            r = unlearn(model, tok, recs["forget"], recs["retain"], masks[key], cfg, seed=0, data=data)
        finally:
            T.row_gradients = real
        r.delta.undo(model)
        stats[key] = r.stats
        ctx.setdefault("delta", r.delta) if key == "masked" else None
        return [h["seconds"] for h in r.history]

    def run_full():
        backup = {n: p.detach().clone() for n, p in model.named_parameters()}
        fn = OBJECTIVES[cfg.objective]
        hist: list[dict] = []
        st: dict = {}
        try:
            train_masked(model, lambda s: fn(model, data.step_batch(s), cfg), steps, None, cfg.lr, cfg.weight_decay,
                         cfg.max_grad_norm, 0, history=hist, stats=st)
        finally:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(backup[n])
            del backup
        stats["full"] = st
        return [h["seconds"] for h in hist]

    variants = {"masked": lambda: run_masked("masked"), "masked-dense": lambda: run_masked("masked-dense"),
                "masked-row": lambda: run_masked("masked-row"),
                "unmasked": lambda: run_masked("unmasked"),
                "full": run_full}
    per_step: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(repeats):
        for k in names[r % len(names):] + names[: r % len(names)]:
            gc.collect()
            secs = variants[k]()
            per_step[k].extend(secs[1:] if len(secs) > 1 else secs)  # first step of a run: warm-up
            log(f"step repeat {r + 1}/{repeats}: {k} {median(secs):.2f} s/step")
    med = {k: median(v) for k, v in per_step.items()}

    # profile: the optimizer alone for each variant (same entries as train_masked builds), gradients set to ones
    opt_s = {}
    for key in ("masked", "unmasked"):
        named = dict(model.named_parameters())
        entries = [(named[n], None if bool(m.all()) else m.reshape(-1).nonzero().squeeze(1))
                   for n, m in masks[key].masks.items()]
        backup = {n: named[n].detach().clone() for n in masks[key].masks}
        opt = MaskedAdamW(entries, 1e-12, 0.0, 1.0)
        for p, _ in entries:
            p.grad = torch.ones_like(p)
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            opt.step()
            ts.append(time.perf_counter() - t0)
        with torch.no_grad():
            for n in masks[key].masks:
                named[n].grad = None
                named[n].copy_(backup[n])
        del opt, backup, entries
        opt_s[key] = median(ts)
    m = stats["masked"]
    res.update({
        "masked_step_ratio": med["masked"] / med["unmasked"],
        "masked_step_ratio_vs_full_adamw": med["masked"] / med["full"],
        "masked_row_step_ratio": med["masked-row"] / med["unmasked"],
        "masked_row_step_s": med["masked-row"],
        "masked_row_gradient_tensors": stats["masked-row"]["row_gradient_tensors"],
        "masked_entry_gradient_tensors": stats["masked"]["entry_gradient_tensors"],
        "masked_sampled_vs_dense_ratio": med["masked"] / med["masked-dense"],
        "masked_step_s": med["masked"],
        "unmasked_step_s": med["unmasked"],
        "full_adamw_step_s": med["full"],
        "masked_optimizer_only_s": opt_s["masked"],
        "unmasked_optimizer_only_s": opt_s["unmasked"],
        "masked_entries": m["masked_entries"],
        "masked_trainable_tensors": m["trainable_tensors"],
        "masked_frozen_tensors": m["frozen_tensors"],
        "unmasked_trainable_tensors": stats["unmasked"]["trainable_tensors"],
        "optimizer_state_bytes_per_masked_entry": m["optimizer_state_numel"] * 4 / m["masked_entries"],
        "optimizer_state_bytes_masked": m["optimizer_state_numel"] * 4,
        "optimizer_state_bytes_unmasked": stats["unmasked"]["optimizer_state_numel"] * 4,
        "step_objective": cfg.objective,
        "step_batch_size": cfg.batch_size,
        "steps_per_run": steps,
        "step_repeats": repeats,
    })


def run(b: Bench) -> None:
    bench_step(b.lm, b.recs, 3 if b.quick else 5, 2 if b.quick else 3, b.res, b.shared)
