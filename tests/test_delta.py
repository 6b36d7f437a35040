import pytest
import torch

from grin_ui.delta import SparseDelta


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(20, 30, generator=g))
        self.v = torch.nn.Parameter(torch.randn(8, 8, generator=g))
        self.u = torch.nn.Parameter(torch.randn(5, generator=g))


def change(model, masks, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, m in masks.items():
            p = getattr(model, n)
            p[m] += torch.randn(int(m.sum()), generator=g)


def setup():
    model = Toy()
    g = torch.Generator().manual_seed(1)
    masks = {"w": torch.rand(20, 30, generator=g) < 0.1, "v": torch.rand(8, 8, generator=g) < 0.9}
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    snap = SparseDelta.snapshot(model, masks)
    change(model, masks)
    changed = {n: p.detach().clone() for n, p in model.named_parameters()}
    return model, masks, original, changed, SparseDelta.capture(model, snap, {"note": "x"})


def same(model, ref):
    return all(torch.equal(p, ref[n]) for n, p in model.named_parameters())


def test_capture_undo_apply_bit_exact():
    model, masks, original, changed, delta = setup()
    assert delta.entries["w"].idx is not None and delta.entries["v"].idx is None  # sparse vs dense storage
    assert delta.nnz == int(masks["w"].sum()) + 64
    assert delta.changed() == int(masks["w"].sum()) + int(masks["v"].sum())
    delta.undo(model)
    assert same(model, original)
    delta.apply(model)
    assert same(model, changed)
    delta.undo(model)
    with pytest.raises(RuntimeError):
        with delta.applied(model):
            assert same(model, changed)
            raise RuntimeError("boom")
    assert same(model, original)


def test_save_load_roundtrip(tmp_path):
    model, masks, original, changed, delta = setup()
    delta.save(tmp_path / "d.safetensors")
    loaded = SparseDelta.load(tmp_path / "d.safetensors")
    assert loaded.meta == {"note": "x"} and sorted(loaded.entries) == ["v", "w"]
    assert loaded.nnz == delta.nnz and loaded.changed() == delta.changed()
    loaded.undo(model)
    assert same(model, original)
    with loaded.applied(model):
        assert same(model, changed)
    assert same(model, original)
