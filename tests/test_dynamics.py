"""Unlearning dynamics per example (grin_ui.dynamics) on the tiny fixture: what is recorded, that recording does not
change the run, the summary numbers, and the report.json block (schema-checked) written by `grin-ui run`."""

import dataclasses
import json
import math

import torch

from grin_ui.cli import main
from grin_ui.config import MaskConfig, NoiseConfig, RunConfig, UnlearnConfig
from grin_ui.dynamics import DynamicsRecorder, summarize
from grin_ui.pipeline import unlearn_pipeline
from grin_ui.report import validate_report
from tests import tiny
from tests.test_journey import write_jsonl

CFG = dict(mask=MaskConfig("grin", 0.10, "global"), noise=NoiseConfig(0.1), probes=(), utility=False)


def test_recording_is_exact_and_does_not_change_the_run(tiny_lm):
    cfg = RunConfig(**CFG, unlearn=UnlearnConfig(objective="npo", lr=5e-3, steps=9, batch_size=8,
                                                 stop_when_forgotten=False))
    sets = {"forget": tiny.FORGET, "retain": tiny.RETAIN[:6], "holdout": tiny.HOLDOUT}
    rec = DynamicsRecorder.build(tiny_lm.tokenizer, sets, every=4)
    plain = unlearn_pipeline(tiny_lm, tiny.FORGET, tiny.RETAIN[:6], cfg, holdout=tiny.HOLDOUT)
    plain.delta.undo(tiny_lm.model)
    res = unlearn_pipeline(tiny_lm, tiny.FORGET, tiny.RETAIN[:6], cfg, holdout=tiny.HOLDOUT, dynamics=rec)
    for name, e in plain.delta.entries.items():  # the same trajectory, bit for bit
        assert torch.equal(e.new, res.delta.entries[name].new)
    dyn = res.dynamics
    assert dyn["steps"] == [0, 4, 8, 9]  # the original, every 4th step, the last step run
    assert [len(dyn["sets"][s]["examples"]) for s in ("forget", "retain", "holdout")] == [6, 6, 6]
    # step 9 is the unlearned model: its values are the mean answer-token log-probs under the delta
    from grin_ui.data import encode
    from grin_ui.evaluate import score_items

    stats = score_items(tiny_lm.model, encode(tiny.FORGET, tiny_lm.tokenizer).items, tiny_lm.tokenizer.pad_token_id)
    got = [e["logprob"][-1] for e in dyn["sets"]["forget"]["examples"]]
    assert got == [float(s.logprobs.mean()) for s in stats]
    res.delta.undo(tiny_lm.model)
    stats0 = score_items(tiny_lm.model, encode(tiny.FORGET, tiny_lm.tokenizer).items, tiny_lm.tokenizer.pad_token_id)
    assert [e["logprob"][0] for e in dyn["sets"]["forget"]["examples"]] == [float(s.logprobs.mean()) for s in stats0]
    f = dyn["sets"]["forget"]["mean"]
    assert f[-1] < f[0] - 1.0  # forgotten: more than 1 nat per token lower after 9 steps
    r = dyn["sets"]["retain"]["mean"]
    assert r[-1] - r[0] > f[-1] - f[0] + 1.0 and dyn["summary"]["selectivity_area"] > 0.5  # forget fell, retain not


def test_summary_numbers_on_a_constructed_record():
    dyn = {"steps": [0, 2, 4], "sets": {
        "forget": {"mean": [-0.1, -1.0, -3.0], "fact_mean": [-0.1, -1.0, -3.0],
                   "examples": [{"label": "a", "logprob": [-0.1, -2.5, -4.0], "fact_logprob": [-0.1, -2.5, -4.0]},
                                {"label": "b", "logprob": [-0.1, 0.5, -2.0], "fact_logprob": [-0.1, 0.5, -2.0]}]},
        "retain": {"mean": [-0.2, -0.4, -0.3], "fact_mean": [-0.2, -0.4, -0.3], "examples": []},
        "holdout": {"mean": [-9.0, -9.0, -9.0], "fact_mean": [-2.0, -2.0, -2.5], "examples": []}}}
    from grin_ui.dynamics import forget_examples

    dyn["forget_examples"] = forget_examples(dyn)
    assert [e["steps_to_forget"] for e in dyn["forget_examples"]] == [2, None]
    assert dyn["forget_examples"][0]["memorization"] == math.exp(-0.1)
    s = summarize(dyn)
    assert s["forget_step"] == 4 and s["retain_change_at_forget"] == -0.3 + 0.2
    # gaps Δretain − Δforget: 0, (−0.2) − (−0.9) = 0.7, (−0.1) − (−2.9) = 2.8; trapezoid over 4 steps / 4
    assert abs(s["selectivity_area"] - (2 * 0.35 + 2 * 1.75) / 4) < 1e-12
    assert abs(s["forget_change"] + 2.9) < 1e-12 and s["memorization_spearman"] is None
    assert s["difficulty_spearman"] is None and dyn["forget_examples"][0]["difficulty"] is None
    # difficulty: the answer probability under a reference model that never saw the example
    dyn["reference_logprobs"] = [-3.0, -1.0]
    assert [e["difficulty"] for e in forget_examples(dyn)] == [math.exp(-3.0), math.exp(-1.0)]
    from grin_ui.dynamics import holdout_level

    assert holdout_level(dyn) == math.exp(-9.0)


def test_cli_writes_dynamics_and_spunge_into_report(tiny_dir, tmp_path):
    """`grin-ui run --dynamics 2` writes the dynamics block; with `--split-by attribute --merge average` each subset's
    run has its own dynamics over its own forget subset. Both report.json files follow the schema."""
    d = tiny_dir
    forget = [dataclasses.replace(r, attribute="born" if "born" in r.question else "writes") for r in tiny.FORGET]
    args = ["run", "--model", d, "--out", str(tmp_path / "out"), "--forget", write_jsonl(tmp_path / "f.jsonl", forget),
            "--retain", write_jsonl(tmp_path / "r.jsonl", tiny.RETAIN),
            "--holdout", write_jsonl(tmp_path / "h.jsonl", tiny.HOLDOUT), "--sparsity", "0.1", "--steps", "24",
            "--lr", "5e-3", "--objective", "npo", "--probes", "", "--no-utility", "--split-by", "attribute",
            "--merge", "average", "--dynamics", "2"]
    unsplit = [a if a != "24" else "60" for a in args[:-6]]  # the unsplit run: a budget that reaches the holdout level
    # the reference model is the original itself here: each example's difficulty must equal its memorization
    assert main(unsplit + ["--dynamics", "4", "--neighbours", write_jsonl(tmp_path / "n.jsonl", tiny.RETAIN[:4]),
                           "--reference", d]) == 0
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    validate_report(rep)
    dyn = rep["dynamics"]
    assert set(dyn["sets"]) == {"forget", "retain", "neighbours", "holdout"} and rep["spunge"] is None
    assert dyn["steps"][0] == 0 and all(s % 4 == 0 for s in dyn["steps"][:-1])
    assert dyn["steps"][-1] == len(rep["history"])  # the last step run
    assert dyn["summary"]["forget_step"] is not None and len(dyn["forget_examples"]) == 6
    mem = [e["memorization"] for e in dyn["forget_examples"]]  # = §4 answer probability, example by example
    assert [round(m, 6) for m in mem] == [round(e["answer_prob"], 6)
                                          for e in rep["eval"]["original"]["forget"]["examples"]]
    assert [e["difficulty"] for e in dyn["forget_examples"]] == mem
    assert dyn["summary"]["difficulty_spearman"] == dyn["summary"]["memorization_spearman"]
    assert "Unlearning dynamics per example" in (tmp_path / "out" / "report.html").read_text()
    assert main(args) == 0
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    validate_report(rep)
    assert rep["config"]["spunge"] == {"split_by": "attribute", "merge": "average", "ties_keep": 0.2}
    assert rep["config"]["unlearn"]["dynamics_every"] == 2
    sp = rep["spunge"]
    assert [s["attribute"] for s in sp["subsets"]] == ["born", "writes"]
    for s in sp["subsets"]:
        dyn = s["dynamics"]
        assert len(dyn["sets"]["forget"]["examples"]) == 3 and dyn["steps"][0] == 0
        assert dyn["steps"][-1] == s["steps_run"]
    assert rep["eval"]["unlearned"]["forget"]["answer_hit_rate"] <= 0.2
    assert "Split–unlearn–merge" in (tmp_path / "out" / "report.html").read_text()
