import pytest
import torch

from grin_ui.config import NoiseConfig
from grin_ui.errors import GrinError
from grin_ui.mask import Mask
from grin_ui.noise import add_noise


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = torch.nn.Parameter(torch.randn(400, 500, generator=g) * 0.05)
        self.b = torch.nn.Parameter(torch.randn(300, 200, generator=g) * 2.0)
        self.c = torch.nn.Parameter(torch.randn(50, 50, generator=g))  # not in the mask


def toy_mask(model, fraction=0.5):
    g = torch.Generator().manual_seed(1)
    masks = {n: torch.rand(getattr(model, n).shape, generator=g) < fraction for n in ("a", "b")}
    sel = sum(int(m.sum()) for m in masks.values())
    return Mask(masks, sel, sel, None, "random", "global", fraction)


@pytest.mark.parametrize("mode", ["relative", "absolute"])
def test_noise_touches_only_masked_entries_with_requested_std(mode):
    model = Toy()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    mask = toy_mask(model)
    add_noise(model, mask, NoiseConfig(scale=0.1, mode=mode), seed=7)
    assert torch.equal(model.c, before["c"])
    for n in ("a", "b"):
        m = mask.masks[n]
        diff = getattr(model, n).detach() - before[n]
        assert torch.equal(getattr(model, n)[~m], before[n][~m])  # unmasked: bit-identical
        assert (diff[m] != 0).float().mean() > 0.999
        sigma = 0.1 * (before[n].std().item() if mode == "relative" else 1.0)
        d = diff[m].double()
        # ~50k-100k draws: the sample std is within 2 % of kappa*sigma_T, the mean within 5 standard errors of 0
        assert d.std().item() == pytest.approx(sigma, rel=0.02)
        assert abs(d.mean().item()) < 5 * sigma / len(d) ** 0.5


def test_noise_is_seeded_and_zero_scale_is_a_no_op():
    runs = []
    for seed in (3, 3, 4):
        model = Toy()
        add_noise(model, toy_mask(model), NoiseConfig(scale=0.5), seed=seed)
        runs.append(model.a.detach().clone())
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    model, ref = Toy(), Toy()
    add_noise(model, toy_mask(model), NoiseConfig(scale=0.0), seed=0)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ref.parameters()))


def test_bad_noise_settings():
    model = Toy()
    with pytest.raises(GrinError, match="noise scale"):
        add_noise(model, toy_mask(model), NoiseConfig(scale=-1.0))
    with pytest.raises(GrinError, match="Unknown noise mode"):
        add_noise(model, toy_mask(model), NoiseConfig(mode="loud"))
