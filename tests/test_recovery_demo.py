"""The built-in comparison "Does quantization undo it?" (grin_ui.recovery_demo) on the tiny model."""

from dataclasses import replace

import pytest
import torch

from grin_ui import recovery_demo as rd
from grin_ui import session as S
from grin_ui.cli import main
from grin_ui.config import EvalConfig, RunConfig
from grin_ui.data import ExampleSet
from grin_ui.errors import GrinError
from grin_ui.evaluate import evaluate_sets
from grin_ui.journey import unlearn
from grin_ui.metrics import recovery_pct
from grin_ui.quantize import quantized
from grin_ui.survival import survival_map

EVAL = EvalConfig(max_new_tokens=12, truth_ratio=False)


def _arms(seed=3):
    base = RunConfig(eval=EVAL)
    base.relearn.steps = 3
    gentle = rd.gentle_config("grad_diff", 2e-3, 4, seed=seed, base=base)
    grin = rd.grin_config(seed=seed, base=replace(base, unlearn=replace(base.unlearn, steps=4,
                                                                         stop_when_forgotten=False)))
    grin.mask = replace(grin.mask, sparsity=0.1)
    return {"gentle": gentle, "grin": grin}


def test_gentle_arm_is_unmasked_noiseless_and_fixed_length_and_grin_arm_keeps_the_defaults():
    g = rd.gentle_config(seed=5)
    assert (g.mask.selector, g.noise.scale, g.unlearn.stop_when_forgotten) == ("none", 0.0, False)
    assert (g.unlearn.objective, g.unlearn.lr, g.unlearn.steps, g.seed) == (rd.GENTLE_OBJECTIVE, rd.GENTLE_LR,
                                                                            rd.GENTLE_STEPS, 5)
    d, r = rd.grin_config(seed=5), RunConfig()
    assert (d.mask, d.noise, d.unlearn, d.score) == (r.mask, r.noise, r.unlearn, r.score)
    arms = rd.default_arms(7)
    assert list(arms) == [rd.GENTLE, rd.GRIN] and {a.seed for a in arms.values()} == {7}


def test_comparison_runs_both_arms_reproducibly_and_reports_recovery_by_the_formula(tiny_lm, tiny_sets):
    model = tiny_lm.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    arms = _arms()
    res = rd.compare(tiny_lm, tiny_sets, arms, kinds=("rtn4",), relearn=True)
    # the base model is left bit for bit original
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert list(res["arms"]) == ["gentle", "grin"]
    g, m = res["arms"]["gentle"], res["arms"]["grin"]
    assert g["config"]["selector"] == "none" and m["config"]["selector"] == "grin"
    assert g["config"]["seed"] == m["config"]["seed"] == 3 and g["steps_run"] == m["steps_run"] == 4
    n_weights = sum(p.numel() for n, p in model.named_parameters() if ".layers." in n and n.endswith("proj.weight"))
    assert g["changed"] > 0.9 * n_weights > 5 * m["changed"] > 0  # dense vs sparse
    for arm in (g, m):  # the relearning probe of each arm: half of the forget set relearned, the rest measured
        assert arm["relearn"]["n_train"] + arm["relearn"]["n_eval"] == len(tiny_sets["forget"])
        assert arm["relearn"]["reference_gain"] is not None  # the holdout set gives the reference
    # the same arm run again by hand (same data, same seed) gives the same quantized evaluation and survival
    orig = evaluate_sets(model, tiny_lm.tokenizer, tiny_sets, EVAL, utility=False)
    for name, arm in res["arms"].items():
        delta = unlearn(tiny_lm, tiny_sets, arms[name]).delta
        assert delta.changed() == arm["changed"]
        with delta.applied(model):
            after = evaluate_sets(model, tiny_lm.tokenizer, tiny_sets, EVAL, utility=False)
        with quantized(model, "rtn4", delta=delta) as q:
            qev = evaluate_sets(q, tiny_lm.tokenizer, {k: tiny_sets[k] for k in ("forget", "retain")}, EVAL,
                                utility=False)
        p = arm["probes"]["rtn4"]
        assert p["quantized"]["answer_prob"] == pytest.approx(qev["forget"]["answer_prob"], rel=1e-6)
        assert arm["unlearned"]["nll"] == pytest.approx(after["forget"]["nll"], rel=1e-6)
        for metric in rd.METRICS:
            want = recovery_pct(orig["forget"][metric], after["forget"][metric], qev["forget"][metric])
            assert p["recovery"][metric] == (None if want is None else pytest.approx(want, rel=1e-6))
        assert p["survival"]["fraction"] == survival_map(model, delta, "rtn4")["fraction"]
    # the table: one row per arm × probe, the recovery printed from the result
    rows = rd.table_rows(res)
    assert [r[:2] for r in rows] == [["gentle", "rtn4"], ["grin", "rtn4"]]
    rec = g["probes"]["rtn4"]["recovery"]["answer_prob"]
    assert rows[0][7] == ("—" if rec is None else f"{rec:.0f} %")
    assert any("all weights" in line for line in rd.table_lines(res))


def test_cli_rejects_an_unknown_probe_before_loading_a_model(capsys):
    assert main(["recovery-demo", "--kinds", "nf5"]) == 2
    assert "Unknown quantization probe 'nf5'" in capsys.readouterr().err


def test_dashboard_action_compares_on_the_session_data_and_leaves_its_own_run_alone(tiny_dir, tiny_sets):
    store = S.SessionStore(default_model=tiny_dir)
    s = store.get("visitor")
    S.load_data(store, s, "forget", ExampleSet(list(tiny_sets["forget"]), "forget"))
    with pytest.raises(GrinError, match="No retain set"):
        S.recovery_demo(store, s, kinds=["rtn4"], arms=_arms())
    S.load_data(store, s, "retain", ExampleSet(list(tiny_sets["retain"]), "retain"))
    base = store.base(s).lm.model
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    out = S.recovery_demo(store, s, kinds=["rtn4"], arms=_arms())
    assert s.recovery_demo is out and list(out["arms"]) == ["gentle", "grin"] and s.delta is None
    assert all(torch.equal(p, before[n]) for n, p in base.named_parameters())
    S.load_data(store, s, "forget", ExampleSet(list(tiny_sets["forget"][:4]), "forget"))
    assert s.recovery_demo is None  # new data: the comparison no longer describes it
