"""The selection comparison (grin_ui.selection_compare, benchmarks/compare.py) on the tiny fixture."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from grin_ui import selection_compare as SC
from grin_ui.errors import GrinError
from grin_ui.models import load_model
from tests import tiny

from tests.helpers import load_script


def _write_sets(folder: Path) -> dict:
    sets = {"forget": tiny.FORGET, "retain": tiny.RETAIN[:8], "neighbours": tiny.RETAIN[8:], "holdout": tiny.HOLDOUT}
    folder.mkdir()
    for name, recs in sets.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps({"question": r.question, "answer": r.answer}) + "\n"
                                                      for r in recs))
    return sets


def test_quick_comparison_on_tiny_model(tiny_dir, tmp_path):
    bench = load_script("benchmarks/compare.py")
    data = tmp_path / "data"
    _write_sets(data)
    out = tmp_path / "rows.jsonl"
    args = ["--quick", "--model", tiny_dir, "--examples", f"dir:{data}", "--selections", "grin,random,none",
            "--seeds", "0,1", "--out", str(out)]
    assert bench.main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["selection"], r["seed"]) for r in rows] == [(n, s) for n in ("grin", "random", "none") for s in (0, 1)]
    for r in rows:
        for key in ("forget_hit", "retain_kept", "neighbours_kept", "kept_ends", "mia_auc", "changed", "mask"):
            assert r[key] is not None, key
        assert r["steps_run"] == 2 and len(r["curve"]) == 3  # steps 0, 1, 2
        assert all(0 < p <= 1 for _, f, k in r["curve"] for p in (f, k))
    by = {(r["selection"], r["seed"]): r for r in rows}
    # seeds change the random mask's draw; GRI masks come from the scores alone, so they stay ...
    assert by["random", 0]["mask"] != by["random", 1]["mask"]
    assert by["grin", 0]["mask"] == by["grin", 1]["mask"]
    assert by["random", 0]["selected"] == by["grin", 0]["selected"] < by["none", 0]["selected"]
    # ... but the noise and the batch order change, and so do the results
    for sel in ("grin", "random", "none"):
        assert by[sel, 0]["curve"] != by[sel, 1]["curve"], sel
    assert by["none", 0]["lr"] == pytest.approx(2e-3 * SC.LR_FACTORS["none"]) and by["grin", 0]["lr"] == 2e-3
    assert by["random", 0]["lr"] == 2e-3

    # a second call resumes: nothing is run again
    assert bench.main(args) == 0
    assert len(out.read_text().splitlines()) == 6

    agg = SC.aggregate(rows)
    assert [(a["selection"], a["seeds"], a["masks"]) for a in agg] == [("grin", [0, 1], 1), ("random", [0, 1], 2),
                                                                       ("none", [0, 1], 1)]
    table = SC.markdown_table(agg).splitlines()
    assert table[0] == "| " + " | ".join(SC.TABLE_COLUMNS) + " |" and len(table) == 5
    assert all(line.count("|") == len(SC.TABLE_COLUMNS) + 1 for line in table)
    assert "±" in table[2]  # two seeds: an interval


def test_compare_restores_the_model_and_seeds_are_repeatable(tiny_dir):
    lm = load_model(tiny_dir, device="cpu")
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    sets = {"forget": tiny.FORGET, "retain": tiny.RETAIN, "holdout": tiny.HOLDOUT}
    base = SC.protocol_config(steps=2, record_every=1)
    base.eval.max_new_tokens = 8
    a = SC.compare(lm, sets, ["grin-fisher", "magnitude"], [3], base)
    b = SC.compare(lm, sets, ["grin-fisher", "magnitude"], [3], base)
    assert all(torch.equal(p, before[n]) for n, p in lm.model.named_parameters())
    for x, y in zip(a, b):  # same seed, same run
        assert x["mask"] == y["mask"] and x["curve"] == y["curve"] and x["forget_hit"] == y["forget_hit"]
    assert a[0]["mask"] != a[1]["mask"]


def test_interval_and_lr_choice():
    iv = SC.interval([0.2, 0.4, None])
    assert iv["n"] == 2 and iv["mean"] == pytest.approx(0.3)
    half = 12.7062047 * math.sqrt(0.02) / math.sqrt(2)  # t(0.975, 1) · sd / √n
    assert iv["hi"] - iv["mean"] == pytest.approx(half, rel=1e-6)
    assert SC.interval([0.5])["lo"] is None and SC.interval([None])["mean"] is None
    bench = load_script("benchmarks/compare.py")
    rows = [{"lr": 1e-3, "forget_hit": 0.5, "retain_kept": 1.0, "neighbours_kept": 1.0},
            {"lr": 2e-3, "forget_hit": 0.0, "retain_kept": 0.8, "neighbours_kept": 0.6},
            {"lr": 4e-3, "forget_hit": 0.1, "retain_kept": 0.9, "neighbours_kept": 0.8}]
    assert bench.choose_lr(rows) == 4e-3  # kept − forget hit: 0.5, 0.7, 0.75
    # none forgets: the best balance kept − forget hit (0.5, 0.1, 0.15)
    assert bench.choose_lr([dict(r, forget_hit=0.5 + i / 10) for i, r in enumerate(rows)]) == 1e-3
    assert bench.choose_lr([dict(r, forget_hit=0.6 - r["lr"] * 100) for r in rows]) == 4e-3  # (0.5, 0.3, 0.65)
    assert SC.balance({"forget_hit": 0.25, "retain_kept": 1.0, "neighbours_kept": 0.5}) == 0.5
    assert SC.balance({"forget_hit": 0.25, "retain_kept": 0.75, "neighbours_kept": None}) == 0.5
    assert SC.balance({"forget_hit": None, "retain_kept": 1.0}) is None
    with pytest.raises(GrinError, match="Unknown selection 'best'"):
        SC.selection_config(SC.protocol_config(), "best", 0)


def test_versus_reference_with_welch_intervals():
    from scipy import stats

    def row(ex, sel, seed, forget, retain):
        return {"example": ex, "selection": sel, "seed": seed, "lr": 1e-3, "mask": f"{sel}{seed}",
                "forget_hit": forget, "retain_kept": retain, "neighbours_kept": None}

    grin, rand = [0.0, 0.0, 0.125], [0.25, 0.375, 0.125]
    rows = ([row("a", "grin", i, f, 1.0) for i, f in enumerate(grin)]
            + [row("a", "random", i, f, 1.0) for i, f in enumerate(rand)]
            + [row("b", "grin", 0, 0.0, 1.0)])  # no reference on example b: not compared
    vs = SC.versus(rows)
    assert [(v["example"], v["selection"], v["seeds"]) for v in vs] == [("a", "grin", (3, 3))]
    d = vs[0]["forget_hit"]
    t = stats.ttest_ind(grin, rand, equal_var=False)
    assert d["diff"] == pytest.approx(-0.625 / 3) and d["p"] == pytest.approx(t.pvalue)
    assert d["lo"] < d["diff"] < d["hi"] and d["hi"] - d["diff"] == pytest.approx(d["diff"] - d["lo"])
    assert vs[0]["balance"]["diff"] == pytest.approx(0.625 / 3)  # retain identical: balance = −forget difference
    assert vs[0]["retain_kept"] == {"diff": 0.0, "lo": None, "hi": None, "p": None}  # no variance on either side
    assert vs[0]["neighbours_kept"]["diff"] is None
    table = SC.versus_table(vs).splitlines()
    assert len(table) == 3 and table[2].startswith("| a | grin − random | 3 vs 3 | +21 [")


def test_tune_summary_of_an_evaluation():
    tune = load_script("benchmarks/tune.py")

    def ev(forget, retain):
        return {"forget": {"answer_hit_rate": forget, "fluency": {"loop_rate": 0.0, "gibberish_rate": 0.25},
                           "examples": [{"generation": "I don't know.", "gibberish_nll": 1.5}]},
                "retain": {"answer_hit_rate": retain, "examples": [{"generation": "Paris.", "finished": True}]},
                "holdout": {"examples": []},  # scored by log-probabilities only: no hit rate
                "mia": {"loss_auc": 0.5}}

    s = tune.summarize(ev(0.0, 0.75), ev(1.0, 1.0))
    assert s["forget_hit"] == 0.0 and s["forget_hit_before"] == 1.0 and s["retain_kept"] == 0.75
    assert s["retain_hit"] == 0.75 and s["holdout_hit"] is None and s["kept_ends"] == 1.0
    assert s["forget_gibberish"] == 0.25 and s["forget_gibberish_nll"] == [1.5] and s["mia_auc"] == 0.5
