import pytest
import torch

from grin_ui.config import MaskConfig
from grin_ui.errors import GrinError
from grin_ui.influence import Scores
from grin_ui.mask import build_mask, target_count

NAMES = ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.down_proj.weight",
         "model.layers.1.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"]


def make_scores(ties: bool, seed: int = 0) -> Scores:
    g = torch.Generator().manual_seed(seed)
    shapes = [(16, 24), (24, 40), (16, 24), (24, 40)]
    out = {}
    for n, s in zip(NAMES, shapes):
        if ties:  # few distinct values: many ties, also across tensors and across bin boundaries
            out[n] = torch.randint(0, 6, s, generator=g).float() * 0.25
        else:
            out[n] = torch.exp(torch.randn(s, generator=g) * 3)
    sal = {n: torch.rand(t.shape, generator=g) for n, t in out.items()}
    return Scores(out, sal)


def brute_topk(tensors: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """Reference: sort every (value, tensor order, flat index) triple; highest value first, then model order, index."""
    vals = torch.cat([t.flatten() for t in tensors.values()]).double()
    owner = torch.cat([torch.full((t.numel(),), i) for i, t in enumerate(tensors.values())])
    flat = torch.cat([torch.arange(t.numel()) for t in tensors.values()])
    keys = sorted(range(len(vals)), key=lambda j: (-vals[j].item(), owner[j].item(), flat[j].item()))[:k]
    masks = {n: torch.zeros(t.numel(), dtype=torch.bool) for n, t in tensors.items()}
    names = list(tensors)
    for j in keys:
        masks[names[owner[j]]][flat[j]] = True
    return {n: m.view(tensors[n].shape) for n, m in masks.items()}


def full(mask, scores):
    return {n: mask.masks.get(n, torch.zeros_like(t, dtype=torch.bool)) for n, t in scores.items()}


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("sparsity", [0.0005, 0.01, 0.05, 0.3, 0.77, 1.0])
def test_global_threshold_matches_brute_force(ties, sparsity):
    s = make_scores(ties)
    mask = build_mask(None, s, MaskConfig("grin", sparsity, "global"))
    k = target_count(sparsity, s.total)
    assert k == max(1, round(sparsity * s.total))
    assert mask.selected == k == sum(int(m.sum()) for m in mask.masks.values())
    ref = brute_topk(s.scores, k)
    for n in NAMES:
        assert torch.equal(full(mask, s.scores)[n], ref[n]), n
    if mask.threshold is not None:  # the threshold separates the selection
        sel = torch.cat([s.scores[n][m] for n, m in full(mask, s.scores).items()])
        rest = torch.cat([s.scores[n][~m] for n, m in full(mask, s.scores).items()])
        assert sel.min() >= 10 ** mask.threshold * (1 - 1e-6)
        assert len(rest) == 0 or rest.max() <= 10 ** mask.threshold * (1 + 1e-6)


@pytest.mark.parametrize("ties", [False, True])
def test_tensor_scope_is_topk_of_each_tensor(ties):
    s = make_scores(ties, seed=3)
    for p in (0.01, 0.1, 0.5):
        mask = build_mask(None, s, MaskConfig("grin", p, "tensor"))
        for n, t in s.scores.items():
            k = int(p * t.numel() + 0.5)
            got = full(mask, s.scores)[n]
            assert int(got.sum()) == k == mask.counts.get(n, 0)
            assert torch.equal(got, brute_topk({n: t}, k)[n]) if k else not got.any()
        assert mask.selected == sum(int(p * t.numel() + 0.5) for t in s.scores.values())


def test_row_scope_keeps_rows_with_highest_mean():
    s = make_scores(False, seed=5)
    mask = build_mask(None, s, MaskConfig("grin", 0.25, "row"))
    total = 0
    for n, t in s.scores.items():
        rows = int(0.25 * t.shape[0] + 0.5)
        m = full(mask, s.scores)[n]
        kept = m.all(1)
        assert torch.equal(m, kept[:, None].expand_as(m))  # whole rows
        assert int(kept.sum()) == rows
        assert set(kept.nonzero().flatten().tolist()) == set(t.mean(1).topk(rows).indices.tolist())
        total += rows * t.shape[1]
    assert mask.selected == total  # selected counts the weights in the kept rows


@pytest.mark.parametrize("scope", ["global", "tensor", "row"])
def test_random_selects_same_count_as_grin_and_is_seeded(scope):
    s = make_scores(False)
    cfg = MaskConfig("grin", 0.1, scope)
    grin = build_mask(None, s, cfg)
    rnd = build_mask(None, s, MaskConfig("random", 0.1, scope), seed=1)
    assert rnd.selected == grin.selected == sum(int(m.sum()) for m in rnd.masks.values())
    if scope != "global":
        assert rnd.counts == grin.counts
    again = build_mask(None, s, MaskConfig("random", 0.1, scope), seed=1)
    other = build_mask(None, s, MaskConfig("random", 0.1, scope), seed=2)
    assert all(torch.equal(rnd.masks[n], again.masks[n]) for n in rnd.masks)
    assert any(not torch.equal(full(rnd, s.scores)[n], full(other, s.scores)[n]) for n in NAMES)
    # random does not follow the scores: overlap with the grin selection is near chance
    if scope == "global":
        overlap = sum(int((full(rnd, s.scores)[n] & full(grin, s.scores)[n]).sum()) for n in NAMES)
        assert overlap < 0.35 * grin.selected


def test_random_global_large_fraction_and_without_scores():
    s = make_scores(False)
    params = [(n, torch.nn.Parameter(torch.zeros_like(t))) for n, t in s.scores.items()]
    m = build_mask(params, None, MaskConfig("random", 0.8, "global"), seed=0)
    assert m.selected == round(0.8 * s.total)
    assert m.selected == sum(int(x.sum()) for x in m.masks.values())


def test_none_and_forget_saliency():
    s = make_scores(False)
    none = build_mask(None, s, MaskConfig("none", 0.01, "global"))
    assert none.selected == none.total == s.total and all(m.all() for m in none.masks.values())
    sal = build_mask(None, s, MaskConfig("forget-saliency", 0.05, "global"))
    ref = brute_topk(s.forget_saliency, target_count(0.05, s.total))
    assert all(torch.equal(full(sal, s.scores)[n], ref[n]) for n in NAMES)


def test_densities_and_omitted_tensors():
    raw = make_scores(False).scores
    raw[NAMES[0]] = raw[NAMES[0]] * 1e6  # the first tensor dominates: a small global mask selects only there
    s = Scores(raw)
    mask = build_mask(None, s, MaskConfig("grin", 0.01, "global"))
    assert list(mask.masks) == [NAMES[0]]
    dens = mask.density_by_tensor()
    assert dens[NAMES[0]] == pytest.approx(mask.selected / 384) and dens[NAMES[1]] == 0.0
    blocks, modules, values = mask.block_module_density()
    assert blocks == [0, 1] and modules == ["q_proj", "down_proj"]
    assert values[0][0] == pytest.approx(dens[NAMES[0]]) and values[1][1] == 0.0


def test_bad_mask_settings():
    s = make_scores(False)
    with pytest.raises(GrinError, match="Sparsity must be in"):
        build_mask(None, s, MaskConfig("grin", 0.0))
    with pytest.raises(GrinError, match="Unknown mask scope"):
        build_mask(None, s, MaskConfig("grin", 0.1, "block"))
    with pytest.raises(GrinError, match="needs GRI scores"):
        build_mask([("w", torch.nn.Parameter(torch.zeros(2, 2)))], None, MaskConfig("grin", 0.1))
    with pytest.raises(GrinError, match="forget-saliency"):
        build_mask(None, Scores(dict(s.scores)), MaskConfig("forget-saliency", 0.1))


def test_tensor_normalisation_ranks_by_score_over_tensor_median():
    """normalize="tensor": a global top-k of score / median(score of its tensor). A tensor whose scores are all 1e8×
    larger takes the whole selection without it, and only its share with it."""
    s = make_scores(False)
    boosted = {n: t * (1e8 if i == 1 else 1.0) for i, (n, t) in enumerate(s.scores.items())}
    s = Scores(boosted, s.forget_saliency)
    k = target_count(0.05, s.total)
    plain = build_mask(None, s, MaskConfig("grin", 0.05, "global"))
    assert set(plain.masks) == {NAMES[1]}
    norm = build_mask(None, s, MaskConfig("grin", 0.05, "global", normalize="tensor"))
    ref = brute_topk({n: t / t.median() for n, t in boosted.items()}, k)
    assert norm.selected == k and all(torch.equal(full(norm, s.scores)[n], ref[n]) for n in NAMES)
    assert len(norm.masks) == len(NAMES)
    # the tensor and row scopes rank within a tensor: normalising changes nothing there
    for scope in ("tensor", "row"):
        a = build_mask(None, s, MaskConfig("grin", 0.05, scope))
        b = build_mask(None, s, MaskConfig("grin", 0.05, scope, normalize="tensor"))
        assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks) and a.masks.keys() == b.masks.keys()
    sal = build_mask(None, s, MaskConfig("forget-saliency", 0.05, "global", normalize="tensor"))
    ref = brute_topk({n: t / t.median() for n, t in s.forget_saliency.items()}, k)
    assert all(torch.equal(full(sal, s.scores)[n], ref[n]) for n in NAMES)
    # the threshold is only reported in raw score units
    assert plain.threshold is not None and norm.threshold is None
    assert s.normalized("grin") is s.normalized("grin")  # built once
    with pytest.raises(GrinError, match="Unknown score kind"):
        s.normalized("magnitude")
    with pytest.raises(GrinError, match="without the forget-saliency"):
        Scores(dict(boosted)).normalized("forget-saliency")


def test_median_normalisation_ignores_zeros():
    from grin_ui.influence import median_normalized

    t = torch.tensor([0.0, 0.0, 0.0, 2.0, 4.0, 6.0])  # median 0; the non-zero median is 4
    out = median_normalized({"a": t, "z": torch.zeros(3)})
    assert torch.equal(out["a"], t / 4.0) and torch.equal(out["z"], torch.zeros(3))


def test_magnitude_selects_largest_weights():
    g = torch.Generator().manual_seed(3)
    params = [(n, torch.nn.Parameter(torch.randn(s, generator=g)))
              for n, s in zip(NAMES, [(16, 24), (24, 40), (16, 24), (24, 40)])]
    values = {n: p.detach().abs() for n, p in params}
    k = target_count(0.02, sum(t.numel() for t in values.values()))
    m = build_mask(params, None, MaskConfig("magnitude", 0.02, "global"))
    ref = brute_topk(values, k)
    assert m.selected == k and all(torch.equal(full(m, values)[n], ref[n]) for n in NAMES)
    assert m.threshold is None  # not a GRI score
    # what the pipeline passes: the scores too (for the shapes); magnitude ignores them
    with_scores = build_mask(params, make_scores(False), MaskConfig("magnitude", 0.02, "global"))
    assert all(torch.equal(with_scores.masks[n], m.masks[n]) for n in m.masks) and with_scores.masks.keys() == m.masks.keys()
    per_tensor = build_mask(params, None, MaskConfig("magnitude", 0.1, "tensor"))
    for n, t in values.items():
        kt = round(0.1 * t.numel())
        assert int(per_tensor.masks[n].sum()) == kt
        assert t[per_tensor.masks[n]].min() >= t[~per_tensor.masks[n]].max()
    rows = build_mask(params, None, MaskConfig("magnitude", 0.25, "row"))
    for n, t in values.items():
        top = set(t.mean(1).topk(round(0.25 * t.shape[0])).indices.tolist())
        assert {i for i in range(t.shape[0]) if rows.masks[n][i].all()} == top
    # normalised magnitudes: a global top-k of |w| over the tensor's median |w|
    scaled = [(n, torch.nn.Parameter(p.detach() * (50.0 if i == 0 else 1.0))) for i, (n, p) in enumerate(params)]
    norm = build_mask(scaled, None, MaskConfig("magnitude", 0.02, "global", normalize="tensor"))
    ref = brute_topk({n: p.detach().abs() / p.detach().abs().median() for n, p in scaled}, k)
    assert all(torch.equal(full(norm, values)[n], ref[n]) for n in NAMES)
    with pytest.raises(GrinError, match="needs the scored parameters"):
        build_mask(None, make_scores(False), MaskConfig("magnitude", 0.02, "global"))
    with pytest.raises(GrinError, match="Unknown score normalisation"):
        build_mask(params, None, MaskConfig("magnitude", 0.02, "global", normalize="rank"))
