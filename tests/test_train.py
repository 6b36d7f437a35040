import copy
import threading

import pytest
import torch

from grin_ui.config import MaskConfig, UnlearnConfig
from grin_ui.errors import GrinError
from grin_ui.influence import compute_scores, scored_parameters
from grin_ui.mask import Mask, build_mask
from grin_ui.train import Cancelled, MaskedAdamW, train_masked, unlearn

CFG = UnlearnConfig(objective="grad_diff", lr=5e-3, steps=4, batch_size=6, weight_decay=0.1)


def weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.fixture
def grin_mask(tiny_lm, tiny_sets):
    s = compute_scores(tiny_lm.model, tiny_lm.tokenizer, tiny_sets["forget"], tiny_sets["retain"],
                       keep_forget_saliency=False)
    m = build_mask(scored_parameters(tiny_lm.model), s, MaskConfig("grin", 0.02, "global"))
    # leave the MLP of block 1 out entirely, so that some scored matrices are frozen too
    keep = {n: t for n, t in m.masks.items() if ".layers.1.mlp." not in n}
    sel = sum(int(t.sum()) for t in keep.values())
    return Mask(keep, sel, m.total, None, "grin", "global", m.sparsity)


def test_masked_unlearning_changes_only_masked_entries(tiny_lm, tiny_sets, grin_mask):
    model = tiny_lm.model
    before = weights(model)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    got_grad, seen_flags = set(), {}
    hooks = [p.register_post_accumulate_grad_hook(lambda p, n=n: got_grad.add(n))
             for n, p in model.named_parameters()]
    calls = []
    res = unlearn(model, tiny_lm.tokenizer, tiny_sets["forget"], tiny_sets["retain"], grin_mask, CFG, seed=0,
                  progress=lambda *a: (calls.append(a), seen_flags.update(
                      {n: p.requires_grad for n, p in model.named_parameters()})))
    for h in hooks:
        h.remove()
    assert not res.cancelled and len(res.history) == 4 and [c[0] for c in calls] == [1, 2, 3, 4]
    assert all(h["retain_loss"] is not None and h["forget_loss"] < 0 for h in res.history)
    masked = set(grin_mask.masks)
    assert len(masked) == 11
    # frozen tensors (embeddings, norms, unselected matrices) never received a weight gradient
    assert got_grad == masked
    assert {n for n, f in seen_flags.items() if f} == masked
    changed_entries = 0
    for n, p in model.named_parameters():
        m = grin_mask.masks.get(n, torch.zeros_like(p, dtype=torch.bool))
        assert torch.equal(p[~m], before[n][~m]), n  # unmasked: bit-identical (weight decay included)
        changed_entries += int((p[m] != before[n][m]).sum())
    assert changed_entries >= 0.95 * grin_mask.selected
    # the delta covers exactly the masked entries and undoes bit-exactly
    assert res.delta.nnz == grin_mask.selected and res.delta.changed() == changed_entries
    assert res.stats["optimizer_state_numel"] == 2 * grin_mask.selected
    res.delta.undo(model)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags and not model.training


def test_same_seed_gives_identical_delta(tiny_lm, tiny_sets, grin_mask):
    model = tiny_lm.model
    deltas = []
    for seed in (1, 1, 2):
        res = unlearn(model, tiny_lm.tokenizer, tiny_sets["forget"], tiny_sets["retain"], grin_mask, CFG, seed=seed)
        deltas.append(res.delta)
        res.delta.undo(model)
    a, b, c = deltas
    for n, e in a.entries.items():
        assert torch.equal(e.idx, b.entries[n].idx) and torch.equal(e.old, b.entries[n].old)
        assert torch.equal(e.new, b.entries[n].new)
    assert any(not torch.equal(e.new, c.entries[n].new) for n, e in a.entries.items())  # the seed shuffles data


@pytest.mark.parametrize("kind", ["event", "callable"])
def test_cancel_restores_the_model(tiny_lm, tiny_sets, grin_mask, kind):
    model = tiny_lm.model
    before = weights(model)
    event = threading.Event()
    cancel = event if kind == "event" else event.is_set
    res = unlearn(model, tiny_lm.tokenizer, tiny_sets["forget"], tiny_sets["retain"], grin_mask, CFG, seed=0,
                  progress=lambda step, *a: event.set() if step == 2 else None, cancel=cancel)
    assert res.cancelled and res.delta is None and len(res.history) == 2
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(p.grad is None for p in model.parameters()) and not model.training


def test_unmasked_training_and_its_cancel(tiny_lm, tiny_sets):
    model = tiny_lm.model
    before = weights(model)
    x = torch.randint(0, 100, (2, 8))
    loss_fn = lambda step: model(input_ids=x, labels=x).loss  # noqa: E731
    calls = []
    with pytest.raises(Cancelled, match="step 1 of 5"):
        train_masked(model, loss_fn, 5, None, 1e-3, cancel=lambda: len(calls) >= 1,
                     progress=lambda *a: calls.append(a))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert train_masked(model, loss_fn, 2, None, 1e-3) is None
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters())  # everything trainable


def test_masked_adamw_matches_torch_adamw():
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(30, 20, generator=g)
    mask = torch.rand(30, 20, generator=g) < 0.3
    idx = mask.view(-1).nonzero().squeeze(1)
    target = torch.randn(30, 20, generator=g)
    ours, ref = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0[mask].clone())
    opt = MaskedAdamW([(ours, idx)], lr=0.01, weight_decay=0.05)
    topt = torch.optim.AdamW([ref], lr=0.01, weight_decay=0.05, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(5):
        ((ours - target) ** 2).sum().backward()
        opt.step()
        ours.grad = None
        ((ref - target[mask]) ** 2).sum().backward()
        topt.step()
        topt.zero_grad()
    torch.testing.assert_close(ours.detach()[mask], ref.detach(), rtol=1e-6, atol=1e-6)
    assert torch.equal(ours.detach()[~mask], w0[~mask])
    assert opt.state_numel() == 2 * int(mask.sum())


def test_bad_training_settings(tiny_lm, tiny_sets, grin_mask):
    with pytest.raises(GrinError, match="Unknown objective 'forgetful'"):
        unlearn(tiny_lm.model, tiny_lm.tokenizer, tiny_sets["forget"], tiny_sets["retain"], grin_mask,
                UnlearnConfig(objective="forgetful"))
    with pytest.raises(GrinError, match="retain set is empty"):
        unlearn(tiny_lm.model, tiny_lm.tokenizer, tiny_sets["forget"], [], grin_mask, UnlearnConfig())
    before = weights(tiny_lm.model)
    with pytest.raises(GrinError, match="diverged"):
        train_masked(tiny_lm.model, lambda s: torch.tensor(float("nan"), requires_grad=True), 2, grin_mask.masks, 1e-3)
    assert all(torch.equal(p, before[n]) for n, p in tiny_lm.model.named_parameters())


def test_masked_adamw_keeps_fp32_master_copies_of_bf16_entries():
    """bf16 weights of magnitude ~0.02 have a spacing of 2^-13 ≈ 1.2e-4: one AdamW step at lr 1e-5 is far below
    half of it. With fp32 master copies the 20 steps accumulate (≈ 2e-4) exactly as in float32."""
    g = torch.Generator().manual_seed(0)
    magnitude = 2 ** -6 + torch.rand(16, 32, generator=g) * 2 ** -6  # in [2^-6, 2^-5): bf16 spacing 2^-13
    w0 = (magnitude * torch.sign(torch.randn(16, 32, generator=g))).to(torch.bfloat16)
    mask = torch.rand(16, 32, generator=g) < 0.3
    idx = mask.view(-1).nonzero().squeeze(1)
    c = torch.randn(16, 32, generator=g).to(torch.bfloat16).float()  # loss Σ c·w: the gradient is c, exactly
    half = torch.nn.Parameter(w0.clone())
    full = torch.nn.Parameter(w0.float())
    opt16 = MaskedAdamW([(half, idx)], lr=1e-5, weight_decay=0.01)
    opt32 = MaskedAdamW([(full, idx)], lr=1e-5, weight_decay=0.01)
    for _ in range(20):
        for p, opt in ((half, opt16), (full, opt32)):
            (p.float() * c).sum().backward()
            opt.step()
            p.grad = None
    master = opt16.master[0]
    assert torch.equal(master, full.detach()[mask])  # the master follows the float32 run bit for bit
    assert torch.equal(half.detach()[mask], full.detach()[mask].to(torch.bfloat16))  # bf16 = master rounded
    moved = full.detach()[mask] - w0.float()[mask]
    assert torch.allclose(moved, -20 * 1e-5 * torch.sign(c[mask]), rtol=0.05)  # ≈ 20 · lr per entry
    assert (half.detach()[mask] != w0[mask]).float().mean() > 0.9  # the small steps accumulated in bf16
    assert torch.equal(half.detach()[~mask], w0[~mask])  # unmasked: bit-identical
    assert opt16.master_numel() == int(mask.sum()) and opt32.master_numel() == 0
    assert opt16.state_numel() == 3 * int(mask.sum()) and opt32.state_numel() == 2 * int(mask.sum())
    # one step at lr 1e-5 is below half the bf16 spacing: written back alone, it would change nothing
    one = (w0.float()[mask] - 1e-5 * torch.sign(c[mask])).to(torch.bfloat16)
    assert torch.equal(one, w0[mask])


def test_masked_training_of_a_bf16_model_accumulates_small_updates(tiny_lm, tiny_sets, grin_mask):
    model = tiny_lm.model
    x = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    runs = {}
    for dtype in (torch.float32, torch.bfloat16):
        m = copy.deepcopy(model).to(dtype)
        before = weights(m)
        stats = {}
        delta = train_masked(m, lambda step, m=m: -m(input_ids=x, labels=x).loss.float(), 20, grin_mask.masks,
                             1e-5, max_grad_norm=0.0, stats=stats)
        for n, p in m.named_parameters():
            mk = grin_mask.masks.get(n, torch.zeros_like(p, dtype=torch.bool))
            assert torch.equal(p[~mk], before[n][~mk]), n  # unmasked entries stay bit-identical
        runs[dtype] = (delta, stats)
    d32, s32 = runs[torch.float32]
    d16, s16 = runs[torch.bfloat16]
    assert s32["optimizer_state_numel"] == 2 * grin_mask.selected
    assert s16["optimizer_state_numel"] == 3 * grin_mask.selected  # m, v and the fp32 master copy
    moved32 = torch.cat([(e.new.float() - e.old.float()).reshape(-1) for e in d32.entries.values()])
    moved16 = torch.cat([(d16.entries[n].new.float() - d16.entries[n].old.float()).reshape(-1)
                         for n in d32.entries])
    # about 20 · 1e-5 per entry in float32; the bf16 run moved the same way (up to bf16 rounding of each entry and
    # its bf16 forward pass). Measured: 86 % of the entries moved, norm ratio 1.06, cosine 0.92; writing each step
    # back in bf16 without the master copy gave 7 %, 0.31 and 0.25.
    assert moved32.abs().median() > 1e-4
    assert (moved16 != 0).float().mean() > 0.5
    ratio = moved16.norm() / moved32.norm()
    cosine = torch.dot(moved16, moved32) / (moved16.norm() * moved32.norm())
    assert 0.8 < ratio < 1.25 and cosine > 0.85


def _dense_masked_gradients(lm, sets, masks):
    """A forget batch and autograd's dense weight gradient of its NLL for each masked tensor (every other parameter
    frozen); the gradients are cleared afterwards, the masked tensors left trainable."""
    from grin_ui.data import batches, encode
    from grin_ui.objectives import nll

    model, tok = lm.model, lm.tokenizer
    batch = next(iter(batches(encode(sets["forget"], tok).items, 8, tok.pad_token_id)))
    params = dict(model.named_parameters())
    for p in params.values():
        p.requires_grad_(False)
    for n in masks:
        params[n].requires_grad_(True)
    nll(model, batch).backward()
    dense = {n: params[n].grad.clone() for n in masks}
    for p in params.values():
        p.grad = None
    return batch, dense


def _unlearn_dense(lm, sets, mask, cfg):
    """``unlearn`` with no layer patched by grin_ui.rowgrad: autograd's dense weight gradients."""
    import grin_ui.train as T

    real = T.row_gradients
    T.row_gradients = lambda model, masks: real(model, {})
    try:
        return unlearn(lm.model, lm.tokenizer, sets["forget"], sets["retain"], mask, cfg, seed=0)
    finally:
        T.row_gradients = real


def test_row_scope_computes_only_the_selected_rows_and_trains_as_the_dense_gradient(tiny_lm, tiny_sets):
    """grin_ui.rowgrad: at the row scope each masked linear weight gets grad_y[:, rows]ᵀ·x for its selected rows and
    zero elsewhere — the same selected-row gradient as autograd's dense product — so training is unchanged."""
    from grin_ui.rowgrad import row_gradients, selected_rows

    model, tok = tiny_lm.model, tiny_lm.tokenizer
    s = compute_scores(model, tok, tiny_sets["forget"], tiny_sets["retain"], keep_forget_saliency=False)
    mask = build_mask(scored_parameters(model), s, MaskConfig("grin", 0.1, "row"))
    assert all(selected_rows(m) is not None for m in mask.masks.values())
    assert selected_rows(torch.tensor([[True, False], [False, False]])) is None  # a partly selected row
    from grin_ui.objectives import nll

    batch, dense = _dense_masked_gradients(tiny_lm, tiny_sets, mask.masks)
    params = dict(model.named_parameters())
    with row_gradients(model, mask.masks) as patched:
        assert list(patched) == [n for n in mask.masks if params[n].dim() == 2]
        assert set(patched.values()) == {"rows"}
        nll(model, batch).backward()
    for n, m in mask.masks.items():
        g = params[n].grad
        assert torch.allclose(g[m], dense[n][m], atol=1e-6, rtol=1e-4), n
        assert not g[~m].any(), n  # unselected rows: never computed
    assert all("forward" not in vars(mod) for mod in model.modules())  # the class forward is back
    for p in params.values():
        p.grad = None
    # a whole masked run: row-gradient training (train_masked patches the layers) equals the dense one
    before = weights(model)
    cfg = UnlearnConfig(objective="grad_diff", lr=5e-3, steps=3, batch_size=6)
    res = unlearn(model, tok, tiny_sets["forget"], tiny_sets["retain"], mask, cfg, seed=0)
    assert res.stats["row_gradient_tensors"] == len(patched)
    rows_run = weights(model)
    res.delta.undo(model)
    res2 = _unlearn_dense(tiny_lm, tiny_sets, mask, cfg)
    assert res2.stats["row_gradient_tensors"] == 0
    for n, p in model.named_parameters():
        assert torch.allclose(p, rows_run[n], atol=1e-5), n
    res2.delta.undo(model)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_entry_masks_get_the_sampled_gradient_of_their_entries_and_train_as_the_dense_gradient(tiny_lm, tiny_sets):
    """grin_ui.rowgrad: a linear weight whose mask holds a small share of scattered entries (the global scope) gets
    grad_yᵀ·x at those entries only (the sampled product) and zero elsewhere — autograd's dense gradient there — so
    training is unchanged; matrices with a larger share keep the dense product."""
    from grin_ui.rowgrad import MAX_ENTRY_SHARE, row_gradients

    model, tok = tiny_lm.model, tiny_lm.tokenizer
    s = compute_scores(model, tok, tiny_sets["forget"], tiny_sets["retain"], keep_forget_saliency=False)
    mask = build_mask(scored_parameters(model), s, MaskConfig("grin", 0.02, "global"))
    params = dict(model.named_parameters())
    share = {n: float(m.float().mean()) for n, m in mask.masks.items() if params[n].dim() == 2 and m.any()}
    cut = sorted(share.values())[len(share) // 2]  # a limit between the matrices' shares: both kinds occur
    small = {n for n, v in share.items() if v <= cut}
    assert small and set(share) - small
    from grin_ui.objectives import nll

    batch, dense = _dense_masked_gradients(tiny_lm, tiny_sets, mask.masks)
    with row_gradients(model, mask.masks, max_entry_share=cut) as patched:
        assert patched == {n: "entries" for n in mask.masks if n in small}
        nll(model, batch).backward()
    for n, m in mask.masks.items():
        g = params[n].grad
        torch.testing.assert_close(g[m], dense[n][m], atol=1e-6, rtol=1e-4)
        if n in small:
            assert not g[~m].any(), n  # unselected entries: never computed
        else:
            assert torch.equal(g, dense[n]), n  # the dense product, as autograd computes it
    assert all("forward" not in vars(mod) for mod in model.modules())
    for p in params.values():
        p.grad = None
    # a whole masked run with the sampled products equals the dense one
    before = weights(model)
    cfg = UnlearnConfig(objective="grad_diff", lr=5e-3, steps=3, batch_size=6)
    res = unlearn(model, tok, tiny_sets["forget"], tiny_sets["retain"], mask, cfg, seed=0)
    assert res.stats["entry_gradient_tensors"] == sum(v <= MAX_ENTRY_SHARE for v in share.values()) > 0
    assert res.stats["row_gradient_tensors"] == 0
    sampled_run = weights(model)
    res.delta.undo(model)
    res2 = _unlearn_dense(tiny_lm, tiny_sets, mask, cfg)
    assert res2.stats["entry_gradient_tensors"] == 0
    moved = 0
    for n, p in model.named_parameters():
        assert torch.allclose(p, sampled_run[n], atol=1e-5), n
        moved += int((p != before[n]).sum())
    assert moved > 0
    res2.delta.undo(model)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_question_states_are_each_prompts_last_hidden_state(tiny_lm, tiny_sets):
    """Batched and right-padded, each row is still the hidden state of that question's own last prompt token."""
    from grin_ui.data import prompt_ids
    from grin_ui.train import question_states

    model, tok = tiny_lm.model, tiny_lm.tokenizer
    recs = tiny_sets["forget"] + tiny_sets["retain"][:3]
    got = question_states(model, tok, recs, batch=4)
    with torch.no_grad():
        for r, row in zip(recs, got):
            h = model(input_ids=torch.tensor([prompt_ids(tok, r.question)]),
                      output_hidden_states=True).hidden_states[-1][0, -1]
            torch.testing.assert_close(row, torch.nn.functional.normalize(h, dim=0), atol=1e-5, rtol=1e-4)


def test_retain_near_trains_the_nearest_retain_examples_twice(tiny_lm, tiny_sets):
    """retain_near: the retain examples asked like a forget question come first, and each pass over the retain set
    holds them twice."""
    from dataclasses import replace

    from grin_ui.data import Record
    from grin_ui.train import nearest_retain, prepare_unlearn

    model, tok = tiny_lm.model, tiny_lm.tokenizer
    forget = tiny_sets["forget"]
    twins = [Record(question=forget[i].question, answer="Nobody knows.") for i in (0, 3)]
    retain = tiny_sets["retain"][:5] + twins + tiny_sets["retain"][5:]
    assert set(nearest_retain(model, tok, forget, retain, 2)) == {5, 6}
    cfg = UnlearnConfig(objective="idk", batch_size=3, retain_near=0)
    rows = lambda d: sum(b["input_ids"].shape[0] for b in d.retain)  # noqa: E731
    assert rows(prepare_unlearn(model, tok, forget, retain, cfg)) == len(retain)
    near = prepare_unlearn(model, tok, forget, retain, replace(cfg, retain_near=0.5))  # 0.5 × 6 forget = 3
    assert rows(near) == len(retain) + 3
    with pytest.raises(GrinError):
        prepare_unlearn(model, tok, forget, retain, replace(cfg, retain_near=-1))
