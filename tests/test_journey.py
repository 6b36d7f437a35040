"""The whole journey on the tiny fixture: library call and the `grin-ui run` CLI contract (SPEC §10)."""

import json

import torch

from grin_ui.cli import main
from grin_ui.config import MaskConfig, NoiseConfig, RunConfig, UnlearnConfig
from grin_ui.delta import SparseDelta
from grin_ui.journey import run_journey
from tests import tiny

TINY = dict(mask=MaskConfig("grin", 0.10, "global"), noise=NoiseConfig(0.1),
            unlearn=UnlearnConfig(objective="npo", lr=5e-3, steps=40, batch_size=8), probes=("rtn4",), utility=False)


def write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(r.to_dict()) for r in records))
    return str(path)


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
    # the base model is back to the original weights, and the saved delta reproduces the unlearned model
    assert all(torch.equal(before[n], p) for n, p in tiny_lm.model.named_parameters())
    saved = SparseDelta.load(tmp_path / "delta.safetensors")
    assert saved.nnz == result.delta.nnz and saved.changed() == result.delta.changed() > 0
    assert json.loads((tmp_path / "report.json").read_text())["eval"]["unlearned"]["forget"]["n"] == 6
    assert "grin-ui audit report" in (tmp_path / "report.html").read_text()


def test_cli_run_writes_contract(tiny_dir, tmp_path, capsys):
    forget = write_jsonl(tmp_path / "forget.jsonl", tiny.FORGET)
    retain = write_jsonl(tmp_path / "retain.jsonl", tiny.RETAIN)
    holdout = write_jsonl(tmp_path / "holdout.jsonl", tiny.HOLDOUT)
    out = tmp_path / "out"
    code = main(["run", "--model", tiny_dir, "--forget", forget, "--retain", retain, "--holdout", holdout,
                 "--out", str(out), "--sparsity", "0.1", "--steps", "40", "--lr", "5e-3", "--probes", "nf4,rtn4",
                 "--seed", "1"])
    assert code == 0
    rep = json.loads((out / "report.json").read_text())
    for state in ("original", "unlearned"):
        for s in ("forget", "retain", "holdout"):
            assert {"answer_hit_rate", "rougeL_recall", "answer_prob", "nll"} <= set(rep["eval"][state][s])
    for probe in ("nf4", "rtn4"):
        assert {"original", "unlearned"} <= set(rep["eval"]["probes"][probe])
        assert "answer_hit_rate" in rep["recovery"][probe]
    assert rep["mask"]["total"] > rep["mask"]["selected"] > 0
    assert rep["config"]["seed"] == 1 and rep["config"]["unlearn"]["steps"] == 40
    assert (out / "delta.safetensors").is_file() and (out / "report.html").is_file()
    assert "recovery under nf4" in capsys.readouterr().out


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
