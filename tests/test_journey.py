"""The whole journey on the tiny fixture: library call, the `grin-ui run` CLI contract (SPEC §10), the neighbours
set, and re-running a recorded session from its report."""

import json

import pytest
import torch

from grin_ui.cli import main
from grin_ui.config import MaskConfig, NoiseConfig, RunConfig, UnlearnConfig
from grin_ui.delta import SparseDelta
from grin_ui.journey import run_journey
from grin_ui.report import validate_report
from tests import tiny
from tests.helpers import same_up_to_rounding, without_seconds

TINY = dict(mask=MaskConfig("grin", 0.10, "global"), noise=NoiseConfig(0.1),
            unlearn=UnlearnConfig(objective="npo", lr=5e-3, steps=40, batch_size=8), probes=("rtn4",), utility=False)
RETAIN, NEIGHBOURS = tiny.RETAIN[:8], tiny.RETAIN[8:]  # the model knows both; unlearning sees only RETAIN
RUN_FLAGS = ["--sparsity", "0.1", "--steps", "12", "--lr", "5e-3", "--probes", "rtn4", "--seed", "3", "--no-utility"]


def write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(r.to_dict()) for r in records))
    return str(path)


def data_files(tmp_path) -> list[str]:
    args = []
    for name, recs in (("forget", tiny.FORGET), ("retain", RETAIN), ("neighbours", NEIGHBOURS),
                       ("holdout", tiny.HOLDOUT)):
        args += [f"--{name}", write_jsonl(tmp_path / f"{name}.jsonl", recs)]
    return args


def test_journey_forgets_and_restores(tiny_lm, tmp_path):
    before = {n: p.clone() for n, p in tiny_lm.model.named_parameters()}
    sets = {"forget": tiny.FORGET, "retain": tiny.RETAIN, "holdout": tiny.HOLDOUT}
    report, result = run_journey(tiny_lm, sets, RunConfig(**TINY), out_dir=tmp_path)
    ev = report["eval"]
    assert ev["original"]["forget"]["answer_hit_rate"] == 1.0
    assert ev["unlearned"]["forget"]["answer_hit_rate"] <= 0.2
    assert ev["unlearned"]["retain"]["answer_hit_rate"] >= 0.75
    assert ev["unlearned"]["forget"]["nll"] > 3 * ev["original"]["forget"]["nll"]
    assert set(ev["probes"]["rtn4"]) >= {"original", "unlearned"}
    assert set(report["recovery"]["rtn4"]) >= {"answer_hit_rate", "rougeL_recall", "answer_prob"}
    assert report["mask"]["selected"] == round(0.10 * report["mask"]["total"])
    assert all(k in report["timings"] for k in ("score", "unlearn", "evaluate_unlearned", "probe_rtn4"))
    assert report["timings"]["total"] == sum(v for k, v in report["timings"].items() if k != "total")
    # the base model is back to the original weights, and the saved delta reproduces the unlearned model
    assert all(torch.equal(before[n], p) for n, p in tiny_lm.model.named_parameters())
    saved = SparseDelta.load(tmp_path / "delta.safetensors")
    assert saved.nnz == result.delta.nnz and saved.changed() == result.delta.changed() > 0
    on_disk = json.loads((tmp_path / "report.json").read_text())
    validate_report(on_disk)
    assert on_disk["eval"]["unlearned"]["forget"]["n"] == 6
    assert "grin-ui audit report" in (tmp_path / "report.html").read_text()


def test_neighbours_are_evaluated_but_never_trained_on(tiny_dir):
    """Adding a neighbours set adds its rows and changes nothing else: same scores, mask, delta and metrics."""
    from grin_ui.models import load_model

    cfg = RunConfig(**{**TINY, "probes": ()})
    cfg.unlearn.steps = 10
    base = {"forget": tiny.FORGET, "retain": RETAIN, "holdout": tiny.HOLDOUT}
    rep0, res0 = run_journey(load_model(tiny_dir), base, cfg)
    rep1, res1 = run_journey(load_model(tiny_dir), {**base, "neighbours": NEIGHBOURS}, cfg)
    assert res0.delta.entries.keys() == res1.delta.entries.keys()
    for name, e in res0.delta.entries.items():
        assert torch.equal(e.new, res1.delta.entries[name].new)
    for state in ("original", "unlearned"):
        a, b = rep0["eval"][state], rep1["eval"][state]
        for s in ("forget", "retain", "holdout"):
            # the neighbours join the evaluation batches: the same figures up to float rounding
            assert same_up_to_rounding(without_seconds(a[s]), without_seconds(b[s]))
        assert "neighbours" not in a and b["neighbours"]["n"] == len(NEIGHBOURS)
    assert rep1["eval"]["original"]["neighbours"]["answer_hit_rate"] == 1.0  # known facts before unlearning
    assert rep1["data"]["neighbours"]["n"] == 4 and "neighbours" not in rep0["data"]
    assert [h["forget_loss"] for h in res0.history] == [h["forget_loss"] for h in res1.history]


def test_cli_run_writes_contract(tiny_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", "--model", tiny_dir, *data_files(tmp_path), "--out", str(out), "--sparsity", "0.1",
                 "--steps", "40", "--lr", "5e-3", "--probes", "nf4,rtn4", "--seed", "1"])
    assert code == 0
    rep = json.loads((out / "report.json").read_text())
    validate_report(rep)
    for state in ("original", "unlearned"):
        for s in ("forget", "retain", "holdout", "neighbours"):
            assert {"answer_hit_rate", "rougeL_recall", "answer_prob", "nll"} <= set(rep["eval"][state][s])
    for probe in ("nf4", "rtn4"):
        assert {"original", "unlearned"} <= set(rep["eval"]["probes"][probe])
        assert "neighbours" in rep["eval"]["probes"][probe]["unlearned"]
        assert "answer_hit_rate" in rep["recovery"][probe]
    assert rep["mask"]["total"] > rep["mask"]["selected"] > 0
    assert rep["config"]["seed"] == 1 and rep["config"]["unlearn"]["steps"] == 40
    assert rep["config"]["probes"] == ["nf4", "rtn4"] and rep["config"]["utility"] is True
    assert rep["model"]["spec"] == tiny_dir and rep["model"]["taught_from"] is None
    assert rep["data"]["retain"]["file"] == str(tmp_path / "retain.jsonl")
    assert rep["rerun"].startswith("grin-ui run --config report.json --model ")
    assert (out / "delta.safetensors").is_file() and (out / "report.html").is_file()
    printed = capsys.readouterr().out
    assert "recovery under nf4" in printed
    rows = [line.split() for line in printed.splitlines()]
    assert sum(r[:2] == ["original", "neighbours"] for r in rows) == 1
    assert sum(r[:2] == ["unlearned", "neighbours"] for r in rows) == 1


def test_rerun_from_report_reproduces_the_metrics(tiny_dir, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["run", "--model", tiny_dir, *data_files(tmp_path), "--out", str(first), *RUN_FLAGS]) == 0
    assert main(["run", "--config", str(first / "report.json"), "--out", str(second)]) == 0
    a, b = (json.loads((d / "report.json").read_text()) for d in (first, second))
    validate_report(b)
    assert b["config"] == a["config"] and b["config"]["seed"] == 3 and b["config"]["unlearn"]["steps"] == 12
    assert b["data"] == a["data"] and b["model"] == a["model"]
    assert without_seconds(b["eval"]) == without_seconds(a["eval"])  # every metric and generation, exactly
    assert b["recovery"] == a["recovery"] and b["survival"] == a["survival"] and b["mask"] == a["mask"]
    assert [h["forget_loss"] for h in b["history"]] == [h["forget_loss"] for h in a["history"]]
    assert a["eval"]["unlearned"]["forget"]["answer_hit_rate"] < a["eval"]["original"]["forget"]["answer_hit_rate"]
    assert SparseDelta.load(first / "delta.safetensors").changed() == SparseDelta.load(
        second / "delta.safetensors").changed()
    # data that differ from the recorded ones are refused, naming the set
    capsys.readouterr()
    changed = tmp_path / "retain-changed.jsonl"
    write_jsonl(changed, RETAIN[:-1])
    code = main(["run", "--config", str(first / "report.json"), "--retain", str(changed), "--out",
                 str(tmp_path / "third")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "The retain set differs from the recorded one" in err[0] and "7 examples instead of 8" in err[0]
    assert main(["run", "--config", str(first / "report.json"), "--out", str(tmp_path / "4"),
                 "--neighbours", str(tmp_path / "forget.jsonl"), "--holdout", str(tmp_path / "holdout.jsonl")]) == 2
    assert "neighbours set differs" in capsys.readouterr().err


def test_cli_run_bad_input_exit_2(tiny_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "a"}\n{"question": \n')
    assert main(["run", "--model", tiny_dir, "--forget", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid JSON on line 2" in err[0]
    forget = write_jsonl(tmp_path / "f.jsonl", tiny.FORGET)
    assert main(["run", "--model", tiny_dir, "--forget", forget, "--out", str(tmp_path / "o")]) == 2
    assert "give a retain set" in capsys.readouterr().err
    assert main(["run", "--model", tiny_dir, "--forget", forget, "--out", "o", "--probes", "nf3"]) == 2
    assert "Unknown probe 'nf3'" in capsys.readouterr().err
    assert main(["run", "--model", tiny_dir, "--out", "o"]) == 2
    assert "--forget" in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "missing.json"), "--out", "o"]) == 2
    assert "No report at" in capsys.readouterr().err


def test_cli_relearning_probe_follows_the_formula_and_the_schema(tiny_dir, tmp_path, capsys):
    """`--probes relearn` runs the relearning probe on the unlearned model: its block in report.json follows the
    schema, its recovery is the SPEC §5 formula on its own numbers, and its "original" numbers are the original
    evaluation's rows of the forget examples it did not relearn on."""
    out = tmp_path / "out"
    code = main(["run", "--model", tiny_dir, *data_files(tmp_path), "--out", str(out), "--sparsity", "0.1",
                 "--steps", "40", "--lr", "5e-3", "--seed", "1", "--no-utility", "--probes", "relearn",
                 "--relearn-steps", "6", "--relearn-lr", "2e-3"])
    assert code == 0
    rep = json.loads((out / "report.json").read_text())
    validate_report(rep)
    rl = rep["relearn"]
    assert rep["config"]["probes"] == ["relearn"] and rep["eval"]["probes"] == {} and rep["recovery"] == {}
    assert rl["config"]["steps"] == 6 and rl["config"]["lr"] == 2e-3 and rep["config"]["relearn"] == rl["config"]
    assert RunConfig.from_dict(rep["config"]).relearn.steps == 6  # the config block reads back
    # the split: disjoint halves of the forget set (and of the holdout set, the reference)
    f_split = rl["split"]["forget"]
    assert sorted(f_split["train"] + f_split["eval"]) == list(range(len(tiny.FORGET)))
    assert len(f_split["train"]) == 3 and not set(f_split["train"]) & set(f_split["eval"])
    assert rl["reference"] is not None and len(rl["split"]["holdout"]["eval"]) == 3
    # M(original) of the evaluated part: the original evaluation's per-example rows at those indices
    rows = [rep["eval"]["original"]["forget"]["examples"][i] for i in f_split["eval"]]
    f = rl["forget"]
    assert f["original"]["answer_prob"] == pytest.approx(sum(r["answer_prob"] for r in rows) / len(rows))
    assert f["original"]["answer_hit_rate"] == pytest.approx(sum(r["hit"] for r in rows) / len(rows))
    # unlearning removed knowledge from that part, and relearning on the other part brought some of it back
    assert f["before"]["answer_prob"] < f["original"]["answer_prob"] - 0.1
    assert f["train_prob_after"] > f["train_prob_before"]
    # recovery % = 100 · (M(relearned) − M(unlearned)) / (M(original) − M(unlearned)), on the report's own numbers
    checked = 0
    for m, v in rl["recovery"].items():
        o, u, r = f["original"][m], f["before"][m], f["after"][m]
        if abs(o - u) > 1e-6:
            assert v == pytest.approx(100 * (r - u) / (o - u)), m
            checked += 1
        else:
            assert v is None, m
    assert checked >= 3 and rl["recovery"]["answer_prob"] is not None
    ref = rl["reference"]
    assert rl["reference_gain"]["answer_prob"] == pytest.approx(
        100 * (ref["after"]["answer_prob"] - ref["before"]["answer_prob"])
        / (f["original"]["answer_prob"] - f["before"]["answer_prob"]))
    assert rep["timings"]["probe_relearn"] == rl["seconds"] > 0
    html_text = (out / "report.html").read_text()
    assert "Relearning probe" in html_text and "reference gain %" in html_text
    printed = capsys.readouterr().out
    line = next(x for x in printed.splitlines() if x.startswith("relearning (6 steps"))
    assert f"answer_prob {rl['recovery']['answer_prob']:.0f} %" in line
    assert "relearning reference (the same steps on never-known facts)" in printed


def test_relearn_is_not_a_quantization_kind(tiny_dir, tmp_path, capsys):
    forget = write_jsonl(tmp_path / "f.jsonl", tiny.FORGET)
    assert main(["run", "--model", tiny_dir, "--forget", forget, "--out", "o", "--probes", "nf4,relearn,nf3"]) == 2
    err = capsys.readouterr().err
    assert "Unknown probe 'nf3'" in err and "rtn8, relearn" in err
    assert main(["run", "--model", tiny_dir, "--forget", forget, "--out", "o", "--relearn-fraction", "1.5"]) == 2
    assert "--relearn-fraction must be between 0 and 1" in capsys.readouterr().err


def test_cli_selection_variants(tiny_dir, tmp_path):
    """The selection knobs of `grin-ui run`: the magnitude selector, per-tensor normalisation, the Fisher statistic
    — recorded in the report, and the Fisher run's mask is not the default |Σg| one."""
    reports = {}
    for tag, flags in (("fisher", ["--score-statistic", "fisher"]), ("normalized", ["--normalize", "tensor"]),
                       ("plain", []), ("magnitude", ["--selector", "magnitude"])):
        out = tmp_path / tag
        assert main(["run", "--model", tiny_dir, *data_files(tmp_path), "--out", str(out), "--sparsity", "0.05",
                     "--steps", "2", "--probes", "", "--no-utility", *flags]) == 0
        reports[tag] = json.loads((out / "report.json").read_text())
        validate_report(reports[tag])
    fisher, norm, plain, mag = (reports[k] for k in ("fisher", "normalized", "plain", "magnitude"))
    assert fisher["config"]["score"]["statistic"] == "fisher" and norm["config"]["mask"]["normalize"] == "tensor"
    assert mag["config"]["mask"]["selector"] == "magnitude" and mag["mask"]["selector"] == "magnitude"
    for other in (fisher, norm, mag):  # each knob changes which weights are selected
        assert other["mask"]["density"]["values"] != plain["mask"]["density"]["values"]
    # the score-threshold selections record their threshold, each statistic its own
    assert all(isinstance(r["mask"]["threshold_log10"], float) for r in (plain, fisher))
    assert plain["mask"]["threshold_log10"] != fisher["mask"]["threshold_log10"]
    assert norm["mask"]["threshold_log10"] is None and mag["mask"]["threshold_log10"] is None
