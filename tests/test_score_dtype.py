"""Scores kept in bfloat16 (ScoreConfig.score_dtype) take half the memory and select almost the same mask."""

from __future__ import annotations

import torch

from grin_ui.config import MaskConfig, ScoreConfig
from grin_ui.influence import compute_scores, scored_parameters
from grin_ui.mask import build_mask


def test_bf16_scores_select_almost_the_same_mask(tiny_lm, tiny_sets):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    f, r = tiny_sets["forget"], tiny_sets["retain"]
    s32 = compute_scores(model, tok, f, r, ScoreConfig(score_dtype="float32"))
    s16 = compute_scores(model, tok, f, r, ScoreConfig(score_dtype="bfloat16"))
    assert all(t.dtype == torch.float32 for t in s32.scores.values())
    assert all(t.dtype == torch.bfloat16 for t in s16.scores.values())
    assert all(t.dtype == torch.bfloat16 for t in s16.forget_saliency.values())
    bytes32 = sum(t.numel() * t.element_size() for t in s32.scores.values())
    assert sum(t.numel() * t.element_size() for t in s16.scores.values()) * 2 == bytes32
    # the bf16 values are the fp32 ones up to four bf16 roundings (|G_f|, |G_r|, + eps, the ratio): ≤ 4 · 2^-8
    for name, t in s32.scores.items():
        rel = ((s16.scores[name].float() - t).abs() / t.clamp_min(1e-30)).max()
        assert rel <= 4 * 2 ** -8, name
    params = scored_parameters(model)
    for sparsity in (0.01, 0.05):
        for scope in ("global", "tensor"):
            m32 = build_mask(params, s32, MaskConfig("grin", sparsity, scope))
            m16 = build_mask(params, s16, MaskConfig("grin", sparsity, scope))
            assert m16.selected == m32.selected
            both = sum(int((m32.masks[n] & m16.masks[n]).sum()) for n in m32.masks if n in m16.masks)
            assert both / m32.selected >= 0.95, (sparsity, scope, both / m32.selected)
    # the dashboard's views read the binned index: the same histogram mass, per-tensor means within 0.01 decades
    assert s16.index.total == s32.index.total
    for a, b in zip(s16.index.mean_log10, s32.index.mean_log10):
        assert abs(a - b) < 0.01
