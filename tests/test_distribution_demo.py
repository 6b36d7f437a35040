"""The in- vs out-of-distribution preset (grin_ui.distribution_demo): its data split, both arms run from the original
model with the same budget and recorded dynamics, the CLI command and the dashboard action (tiny fixture)."""

import json

import pytest
import torch

from grin_ui import distribution_demo as dd
from grin_ui import session as S
from grin_ui.cli import main
from grin_ui.dynamics_plots import distribution_figure
from grin_ui.errors import Cancelled
from grin_ui.ui.unlearn_panel import preset_views
from tests import tiny


def test_preset_sets_share_the_kept_data_and_split_the_forget_sets_by_kind():
    sets = dd.preset_sets()
    ind, ood = sets[dd.ID], sets[dd.OOD]
    for name in ("retain", "neighbours", "holdout"):
        assert ind[name] == ood[name] and ind[name]
    kept_kinds = {r.attribute for r in ind["retain"]}
    assert {r.attribute for r in ood["forget"]} == set(dd.OOD_KINDS) and not kept_kinds & set(dd.OOD_KINDS)
    assert all("capital of" in r.question for r in ind["forget"])
    # in-distribution: most kept facts are of the forget set's kind (capitals); none is an out-of-distribution one
    assert sum("capital of" in r.question for r in ind["retain"]) > len(ind["retain"]) / 2
    assert len(ind["forget"]) == len(ood["forget"]) == 8
    assert not {r.question for r in ood["forget"]} & {r.question for r in ind["retain"]}


def test_both_arms_run_from_the_original_with_the_same_budget(tiny_lm):
    sets = {"in": {"forget": tiny.FORGET[:3], "retain": tiny.RETAIN[:6], "holdout": tiny.HOLDOUT},
            "out": {"forget": tiny.RETAIN[6:9], "retain": tiny.RETAIN[:6], "holdout": tiny.HOLDOUT}}
    cfg = dd.preset_config(lr=5e-3, steps=5, every=2)
    before = {n: p.detach().clone() for n, p in tiny_lm.model.named_parameters()}
    res = dd.compare(tiny_lm, cfg, sets)
    assert all(torch.equal(p, before[n]) for n, p in tiny_lm.model.named_parameters())  # restored after each arm
    assert list(res["arms"]) == ["in", "out"] and res["config"]["objective"] == "grad_ascent"
    for arm in res["arms"].values():
        dyn = arm["dynamics"]
        assert arm["steps_run"] == 5 and dyn["steps"] == [0, 2, 4, 5] and arm["changed"] > 0
        f = dyn["sets"]["forget"]["mean"]
        assert f[-1] < f[0]  # gradient ascent lowered the forget answers
        assert set(dyn["sets"]) == {"forget", "retain", "holdout"}
    rows = dd.summary_rows(res)
    assert [r[:2] for r in rows] == [["in", 3], ["out", 3]] and len(rows[0]) == 2 + len(dd.SUMMARY_COLUMNS)
    assert rows[0][2 + 3] == res["arms"]["in"]["dynamics"]["summary"]["forget_change"]
    lines = dd.table_lines(res)
    assert lines[0].startswith("gradient ascent") and len(lines) == 3 + 2
    fig = distribution_figure(res)
    assert len(fig.data) == 2 * 3 and {t.name for t in fig.data} == {"forget", "retain", "holdout"}
    status, table, _ = preset_views(res)
    assert status == lines[0] and len(table) == 2


def test_cli_dynamics_demo_on_the_built_in_preset(tiny_dir, tmp_path, capsys):
    out = tmp_path / "demo.json"
    assert main(["dynamics-demo", "--model", tiny_dir, "--steps", "2", "--every", "1", "--lr", "1e-3",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert list(res["arms"]) == [dd.ID, dd.OOD]
    assert all(a["dynamics"]["steps"] == [0, 1, 2] for a in res["arms"].values())
    assert all(a["sizes"]["neighbours"] == 29 for a in res["arms"].values())
    printed = capsys.readouterr().out
    assert "| in-distribution | 8 |" in printed and "| out-of-distribution | 8 |" in printed
    assert main(["dynamics-demo", "--model", tiny_dir, "--steps", "0"]) == 2
    assert "--steps and --every must be ≥ 1" in capsys.readouterr().err


def test_dashboard_action_keeps_the_session_run_and_cancels(tiny_dir, monkeypatch):
    store = S.SessionStore(default_model=tiny_dir)
    s = store.get("visitor")
    base = store.base(s).lm.model
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    cfg = dd.preset_config(lr=1e-3, steps=2, every=1)
    out = S.dynamics_demo(store, s, cfg=cfg)
    assert s.dynamics_demo is out and s.delta is None and list(out["arms"]) == [dd.ID, dd.OOD]
    assert all(torch.equal(p, before[n]) for n, p in base.named_parameters())
    s.cancel.set()
    with pytest.raises(Cancelled):
        S.dynamics_demo(store, s, cfg=cfg)
    assert all(torch.equal(p, before[n]) for n, p in base.named_parameters())
