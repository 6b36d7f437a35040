import math

import pytest
import torch

from grin_ui.config import ScoreConfig
from grin_ui.data import batches, encode
from grin_ui.errors import GrinError
from grin_ui.influence import Scores, compute_scores, scored_parameters


def hand_gradients(model, tokenizer, records, batch_size, focus=False):
    """Σ over batches of ∇ mean-NLL, with every parameter trainable (plain autograd, no grin_ui code); ``focus``:
    the NLL over the answer tokens that carry the fact only (the labels of encode(focus=True))."""
    for p in model.parameters():
        p.requires_grad_(True)
        p.grad = None
    for b in batches(encode(records, tokenizer, focus=focus).items, batch_size, tokenizer.pad_token_id):
        model(**b).loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = None
    return grads


def test_gri_equals_hand_computation(tiny_lm, tiny_sets):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    cfg = ScoreConfig(batch_size=4, eps_rel=1e-3)
    s = compute_scores(model, tok, tiny_sets["forget"], tiny_sets["retain"], cfg)

    # the model is untouched: same weights bit for bit, flags restored, no grads left, eval mode
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
        assert p.requires_grad == flags[n] and p.grad is None
    assert not model.training

    g_f = hand_gradients(model, tok, tiny_sets["forget"], 4, focus=cfg.focus_fact)
    g_r = hand_gradients(model, tok, tiny_sets["retain"], 4)
    names = [n for n, _ in scored_parameters(model, cfg)]
    assert sorted(s.scores) == sorted(names) and len(names) == 14  # 2 blocks × 7 projections
    eps = 1e-3 * torch.cat([g_r[n].abs().flatten() for n in names]).mean().item()
    assert s.eps == pytest.approx(eps, rel=1e-5)
    for n in names:
        expected = g_f[n].abs() / (g_r[n].abs() + eps)
        assert s.scores[n].dtype == torch.float32 and s.scores[n].shape == model.get_parameter(n).shape
        torch.testing.assert_close(s.scores[n], expected, rtol=2e-4, atol=1e-6 * expected.max().item())
        torch.testing.assert_close(s.forget_saliency[n], g_f[n].abs(), rtol=2e-4, atol=1e-12)
    # the score is a real ratio, not a constant: it spans several decades
    logs = torch.cat([torch.log10(t.flatten()) for t in s.scores.values()])
    assert logs.max() - logs.median() > 1.5


def test_scored_parameter_sets(tiny_lm):
    model = tiny_lm.model
    default = [n for n, _ in scored_parameters(model)]
    assert all(".layers." in n and n.endswith("_proj.weight") for n in default) and len(default) == 14
    with_norms = [n for n, _ in scored_parameters(model, ScoreConfig(include_norms=True))]
    assert len(with_norms) == 14 + 5  # two norms per block + the final norm
    with_emb = [n for n, _ in scored_parameters(model, ScoreConfig(include_embeddings=True))]
    assert set(with_emb) - set(default) == {"model.embed_tokens.weight"}


def test_summaries_from_cache(tiny_lm, tiny_sets):
    s = compute_scores(tiny_lm.model, tiny_lm.tokenizer, tiny_sets["forget"], tiny_sets["retain"],
                       keep_forget_saliency=False)
    assert s.forget_saliency is None
    table = s.tensor_table()
    assert len(table) == 14 and sum(r["numel"] for r in table) == s.total == 73728
    for r in table:
        t = s.scores[r["name"]]
        assert r["mean_log10"] == pytest.approx(torch.log10(t).double().mean().item(), abs=1e-6)
        assert r["max_log10"] == pytest.approx(math.log10(t.max().item()), abs=1e-6)
        # median from the cached 16-bit bins: within one bin (< 0.004 decades)
        median = torch.log10(t.double()).flatten().kthvalue((t.numel() + 1) // 2).values.item()
        assert abs(r["median_log10"] - median) < 0.004
    blocks, modules, values = s.block_module_matrix()
    assert blocks == [0, 1] and len(modules) == 7 and all(v is not None for row in values for v in row)
    edges, counts = s.log10_histogram(bins=30)
    assert len(edges) == 31 and len(counts) == 30 and sum(counts) == s.total
    all_logs = torch.cat([torch.log10(t.flatten()) for t in s.scores.values()])
    assert edges[0] == pytest.approx(all_logs.min().item(), abs=0.01)
    assert edges[-1] == pytest.approx(all_logs.max().item(), abs=0.01)
    exact = torch.histc(all_logs.double(), bins=30, min=edges[0], max=edges[-1])
    assert (exact - torch.tensor(counts, dtype=torch.float64)).abs().sum() <= 0.01 * s.total


def test_scores_need_both_sets(tiny_lm, tiny_sets):
    with pytest.raises(GrinError, match="retain set"):
        compute_scores(tiny_lm.model, tiny_lm.tokenizer, tiny_sets["forget"], [])
    with pytest.raises(GrinError, match="forget set"):
        compute_scores(tiny_lm.model, tiny_lm.tokenizer, [], tiny_sets["retain"])


def test_progress_reports_every_batch(tiny_lm, tiny_sets):
    calls = []
    compute_scores(tiny_lm.model, tiny_lm.tokenizer, tiny_sets["forget"], tiny_sets["retain"],
                   ScoreConfig(batch_size=4), progress=lambda d, n, m: calls.append((d, n)))
    assert calls[0] == (4, 18) and (18, 18) in calls and len(calls) >= 5


def test_scores_dataclass_from_plain_tensors():
    s = Scores({"model.layers.0.mlp.up_proj.weight": torch.tensor([[0.0, 1.0], [10.0, 100.0]])})
    assert s.total == 4
    row = s.tensor_table()[0]
    assert row["max_log10"] == pytest.approx(2.0) and row["block"] == 0 and row["module"] == "up_proj"


def per_example_gradients(model, tokenizer, records, focus=False):
    """The gradient of each example's mean NLL alone (plain autograd), as a list of name -> tensor."""
    out = []
    for r in records:
        out.append(hand_gradients(model, tokenizer, [r], 1, focus=focus))
    return out


@pytest.mark.parametrize("statistic", ["sum-abs", "fisher"])
def test_per_example_statistics_equal_hand_computation(tiny_lm, tiny_sets, statistic):
    """sum-abs = Σ_e |g_e| / (Σ_e |g_r,e| + ε) and fisher = Σ_e g_e² / (Σ_e g_r,e² + ε), ε from the retain side's
    mean; both differ from the paper's |Σ g| (examples pull some weights in opposite directions)."""
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    cfg = ScoreConfig(batch_size=4, eps_rel=1e-3, statistic=statistic)
    s = compute_scores(model, tok, tiny_sets["forget"], tiny_sets["retain"], cfg)
    paper = compute_scores(model, tok, tiny_sets["forget"], tiny_sets["retain"], ScoreConfig(batch_size=4))
    op = (lambda g: g.abs()) if statistic == "sum-abs" else (lambda g: g.square())
    names = [n for n, _ in scored_parameters(model, cfg)]
    f_stat = {n: sum(op(g[n]) for g in per_example_gradients(model, tok, tiny_sets["forget"], True)) for n in names}
    r_stat = {n: sum(op(g[n]) for g in per_example_gradients(model, tok, tiny_sets["retain"])) for n in names}
    eps = 1e-3 * torch.cat([r_stat[n].flatten() for n in names]).mean().item()
    assert s.eps == pytest.approx(eps, rel=1e-4)
    for n in names:
        expected = f_stat[n] / (r_stat[n] + eps)
        torch.testing.assert_close(s.scores[n], expected, rtol=1e-3, atol=1e-6 * expected.max().item())
        torch.testing.assert_close(s.forget_saliency[n], f_stat[n], rtol=1e-3, atol=1e-6 * f_stat[n].max().item())
    differs = sum(not torch.allclose(s.scores[n], paper.scores[n], rtol=1e-2) for n in names)
    assert differs == len(names)


def test_unknown_statistic(tiny_lm, tiny_sets):
    with pytest.raises(GrinError, match="Unknown score statistic 'l3'"):
        compute_scores(tiny_lm.model, tiny_lm.tokenizer, tiny_sets["forget"], tiny_sets["retain"],
                       ScoreConfig(statistic="l3"))
