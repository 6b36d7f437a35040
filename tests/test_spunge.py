"""Split–unlearn–merge (grin_ui.spunge): the merge rules exactly on constructed deltas, and a SPUNGE run on the tiny
fixture that forgets both subsets while the base model stays untouched."""

import dataclasses

import pytest
import torch

from grin_ui.config import MaskConfig, NoiseConfig, RunConfig, SpungeConfig, UnlearnConfig
from grin_ui.delta import DeltaEntry, SparseDelta
from grin_ui.errors import GrinError
from grin_ui.journey import evaluate, unlearn
from grin_ui.spunge import merge_deltas, split_by
from tests import tiny

BASE = torch.arange(10, dtype=torch.float32) / 4  # the "original" values of one 10-entry tensor (exact in fp32)


def delta(changes: dict[int, float], name: str = "w") -> SparseDelta:
    """A delta over BASE changing entry i by changes[i]."""
    idx = torch.tensor(sorted(changes), dtype=torch.int64)
    old = BASE[idx].clone()
    return SparseDelta({name: DeltaEntry(idx, old, old + torch.tensor([changes[i] for i in sorted(changes)]))})


def change(d: SparseDelta, name: str = "w") -> dict[int, float]:
    e = d.entries[name]
    return {int(i): float(n - o) for i, o, n in zip(e.idx, e.old, e.new)}


def test_average_disjoint_supports_counts_absent_entries_as_zero():
    m = merge_deltas([delta({0: 1.0, 2: -2.0}), delta({5: 4.0, 7: 0.5})], "average")
    assert change(m) == {0: 0.5, 2: -1.0, 5: 2.0, 7: 0.25}
    assert torch.equal(m.entries["w"].old, BASE[[0, 2, 5, 7]])  # the union keeps the original values


def test_average_overlapping_supports():
    m = merge_deltas([delta({1: 1.0, 3: 2.0}), delta({3: -1.0, 4: 3.0}), delta({3: 8.0})], "average")
    # entry 3 is in all three: (2 − 1 + 8) / 3; entries 1 and 4 in one each: change / 3
    assert change(m) == pytest.approx({1: 1 / 3, 3: 3.0, 4: 1.0}, abs=1e-6)
    assert m.meta["merge"] == "average" and m.meta["runs"] == 3


def test_ties_trim_keeps_the_largest_share_of_each_delta():
    d = delta({0: 0.5, 1: -4.0, 2: 2.0, 3: 1.0, 4: -3.0})
    m = merge_deltas([d], "ties", keep=0.4)  # round(0.4 · 5) = 2 kept: -4 and -3
    assert change(m) == {0: 0.0, 1: -4.0, 2: 0.0, 3: 0.0, 4: -3.0}
    assert m.changed() == 2 and m.entries["w"].new[0] == BASE[0]  # trimmed entries keep their original bit-exactly
    # the trim counts over every tensor of a delta together
    two = SparseDelta({**delta({0: 1.0, 1: 5.0}).entries, **delta({0: 4.0, 1: 2.0}, "v").entries})
    m2 = merge_deltas([two], "ties", keep=0.5)
    assert change(m2, "w") == {0: 0.0, 1: 5.0} and change(m2, "v") == {0: 4.0, 1: 0.0}


def test_ties_sign_election_and_disjoint_mean():
    d1 = delta({0: 1.0, 1: 3.0, 2: 0.5, 3: 2.0})
    d2 = delta({0: 2.0, 1: -1.0, 3: -2.0})
    d3 = delta({0: -4.0, 1: 1.0})
    m = merge_deltas([d1, d2, d3], "ties", keep=1.0)
    # entry 0: +1 +2 −4 → sum −1, sign − → mean of the agreeing {−4}; entry 1: 3 −1 +1 → + → mean(3, 1) = 2;
    # entry 2: only d1 → 0.5 (absent changes do not vote); entry 3: +2 −2 → no sign → 0
    assert change(m) == {0: -4.0, 1: 2.0, 2: 0.5, 3: 0.0}
    # with a trim, the small changes no longer vote: d1 keeps {1: 3, 3: 2}, d2 keeps {0: 2, 3: -2}, d3 {0: -4}
    t = merge_deltas([d1, d2, d3], "ties", keep=0.5)
    assert change(t) == {0: -4.0, 1: 3.0, 2: 0.0, 3: 0.0}
    assert t.meta["ties_keep"] == 0.5


def test_merge_dense_and_sparse_and_refuses_different_bases():
    dense = SparseDelta({"w": DeltaEntry(None, BASE.reshape(2, 5).clone(), (BASE + 1).reshape(2, 5))})
    m = merge_deltas([dense, delta({3: 3.0})], "average")
    assert m.entries["w"].idx is None and m.entries["w"].new.shape == (2, 5)
    expect = BASE + 0.5
    expect[3] = BASE[3] + 2.0
    assert torch.equal(m.entries["w"].new.reshape(-1), expect)
    other = delta({3: 1.0})
    other.entries["w"].old[0] += 1  # a different original value at an overlapping entry
    with pytest.raises(GrinError, match="same model"):
        merge_deltas([delta({3: 1.0}), other], "average")
    with pytest.raises(GrinError, match="Unknown merge"):
        merge_deltas([delta({0: 1.0})], "sum")


def test_split_by_attribute():
    recs = [dataclasses.replace(r, attribute=a) for r, a in zip(tiny.FORGET, "ababa")]
    with pytest.raises(GrinError, match="1 of 6 forget examples have no 'attribute'"):
        split_by([dataclasses.replace(r, attribute=a or None) for r, a in zip(tiny.FORGET, "abab a")])
    groups = split_by(recs)
    assert list(groups) == ["a", "b"] and [len(g) for g in groups.values()] == [3, 2]
    with pytest.raises(GrinError, match="at least two"):
        split_by([dataclasses.replace(r, attribute="x") for r in tiny.FORGET])


def test_spunge_run_forgets_both_subsets(tiny_lm):
    """Split the forget set by question kind (birthplace vs genre), unlearn each, merge with TIES: both subsets are
    forgotten by the merged delta, retain stays, and the base model is bit-identical afterwards."""
    forget = [dataclasses.replace(r, attribute="born" if "born" in r.question else "writes") for r in tiny.FORGET]
    sets = {"forget": forget, "retain": tiny.RETAIN, "holdout": tiny.HOLDOUT}
    cfg = RunConfig(mask=MaskConfig("grin", 0.10, "global"), noise=NoiseConfig(0.1),
                    unlearn=UnlearnConfig(objective="npo", lr=5e-3, steps=40, batch_size=8), probes=(),
                    utility=False, spunge=SpungeConfig("attribute", "ties"))
    before = {n: p.clone() for n, p in tiny_lm.model.named_parameters()}
    res = unlearn(tiny_lm, sets, cfg)
    assert all(torch.equal(before[n], p) for n, p in tiny_lm.model.named_parameters())
    sp = res.spunge
    assert [s["attribute"] for s in sp["subsets"]] == ["born", "writes"] and [s["n"] for s in sp["subsets"]] == [3, 3]
    assert res.mask.selected == sp["union_selected"] > max(s["selected"] for s in sp["subsets"])
    assert 0 < res.delta.changed() == sp["merged_changed"] <= res.delta.nnz == res.mask.selected
    nll = sp["nll"]["states"]
    for a in ("born", "writes"):
        assert nll["merged"][a] > 100 * nll["original"][a]  # each subset's answers fall under the merged delta
        sub = {"forget": [r for r in forget if r.attribute == a]}
        assert evaluate(tiny_lm, sub, cfg, delta=res.delta, utility=False)["forget"]["answer_hit_rate"] == 0.0
    kept = evaluate(tiny_lm, {"retain": tiny.RETAIN}, cfg, delta=res.delta, utility=False)["retain"]
    assert kept["answer_hit_rate"] >= 0.9
    assert [h["subset"] for h in res.history][0] == "born" and res.history[-1]["subset"] == "writes"
