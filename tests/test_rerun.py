"""Re-running a recorded session: settings read back from a report, data files found and checked, the command."""

import json
import shlex

import pytest

from grin_ui.cli import _config, build_parser
from grin_ui.config import RunConfig
from grin_ui.data import load_file, parse_text
from grin_ui.errors import GrinError
from grin_ui.rerun import check_data, data_paths, recorded_model, rerun_command, write_sets
from grin_ui.tokens import pad_id
from tests import tiny


def test_config_round_trips_through_json():
    cfg = RunConfig(seed=7, probes=("rtn4", "nf4"), utility=False)
    cfg.unlearn.lr, cfg.mask.scope, cfg.eval.max_listed_examples = 3e-3, "row", 5
    back = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.probes == ("rtn4", "nf4")
    partial = RunConfig.from_dict({"seed": 2, "unlearn": {"steps": 9}})
    assert partial.seed == 2 and partial.unlearn.steps == 9 and partial.unlearn.lr == RunConfig().unlearn.lr
    # a report recorded before retain_near existed ran without it: its re-run does too; a recorded value is kept
    assert partial.unlearn.retain_near == 0 and RunConfig.from_dict({"seed": 2}).unlearn.retain_near == 4
    assert back.unlearn.retain_near == 4
    # before answer_level, a recorded run (its section names the objective) ran without it
    old = RunConfig.from_dict({"unlearn": {"objective": "idk_npo", "lr": 1e-3}}).unlearn
    assert (old.objective, old.answer_level) == ("idk_npo", False)
    assert partial.unlearn.objective == "idk_npo" and partial.unlearn.answer_level is True
    with pytest.raises(GrinError, match=r"Unknown setting config\.unlearn\.speed"):
        RunConfig.from_dict({"unlearn": {"speed": 1}})
    with pytest.raises(GrinError, match=r"config\.mask\.sparsity should be like 0\.01, got 'lots'"):
        RunConfig.from_dict({"mask": {"sparsity": "lots"}})


def test_flags_override_the_recorded_settings():
    recorded = {"config": RunConfig(seed=5, probes=("rtn4",)).to_dict()}
    recorded["config"]["unlearn"]["steps"] = 30
    args = build_parser().parse_args(["run", "--config", "r.json", "--out", "o", "--lr", "1e-4"])
    cfg = _config(args, recorded)
    assert (cfg.seed, cfg.unlearn.steps, cfg.unlearn.lr, cfg.probes) == (5, 30, 1e-4, ("rtn4",))
    assert cfg.unlearn.retain_near == 4  # recorded
    args = build_parser().parse_args(["run", "--config", "r.json", "--out", "o", "--retain-near", "0"])
    assert _config(args, recorded).unlearn.retain_near == 0
    args = build_parser().parse_args(["run", "--config", "r.json", "--out", "o", "--probes", "", "--no-utility"])
    cfg = _config(args, recorded)
    assert cfg.probes == () and cfg.utility is False and cfg.seed == 5


def test_written_sets_reload_with_the_same_hash(tmp_path):
    sets = {"forget": parse_text("\n".join(json.dumps(r.to_dict()) for r in tiny.FORGET)),
            "neighbours": parse_text("Q: Who?\nA: Ann\n\nQ: Where?\nA: Bonn")}
    files = write_sets(sets, tmp_path)
    assert files == {"forget": "forget.jsonl", "neighbours": "neighbours.jsonl"}
    for name, f in files.items():
        back = load_file(tmp_path / f)
        assert back.records == sets[name].records and back.sha256() == sets[name].sha256()


def test_data_paths_and_checks(tmp_path):
    (tmp_path / "forget.jsonl").write_text('{"question": "Who?", "answer": "Ann"}\n')
    forget = load_file(tmp_path / "forget.jsonl")
    rep = {"data": {"forget": {"n": 1, "source": "forget.jsonl", "sha256": forget.sha256(), "file": "forget.jsonl"},
                    "retain": {"n": 3, "source": "pasted", "sha256": "0" * 64, "file": None}},
           "model": {"spec": "some/model", "taught_from": None}}
    with pytest.raises(GrinError, match="had a retain set .3 examples from pasted.; give it with --retain FILE"):
        data_paths(rep, {}, tmp_path)
    paths = data_paths(rep, {"retain": "r.jsonl"}, tmp_path)
    assert paths == {"forget": str(tmp_path / "forget.jsonl"), "retain": "r.jsonl"}
    with pytest.raises(GrinError, match="had no holdout set"):
        data_paths(rep, {"holdout": "h.jsonl"}, tmp_path)
    check_data(rep, {"forget": forget})
    with pytest.raises(GrinError, match="The retain set differs from the recorded one"):
        check_data(rep, {"forget": forget, "retain": forget})
    assert recorded_model(rep) == ("some/model", False)
    assert recorded_model({"model": {"spec": "/cache/taught/x", "taught_from": "default"}}) == ("default", True)


def test_rerun_command_is_shell_safe():
    cmd = rerun_command("my models/tiny", {"neighbours": "n.jsonl", "forget": "f it.jsonl"}, taught=True)
    assert shlex.split(cmd) == ["grin-ui", "run", "--config", "report.json", "--model", "my models/tiny", "--teach",
                                "--forget", "f it.jsonl", "--neighbours", "n.jsonl", "--out", "rerun"]


def test_pad_id_falls_back_to_eos(tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    assert pad_id(tok) == tok.pad_token_id == tok.convert_tokens_to_ids("<pad>")
    tok.pad_token = None
    assert tok.pad_token_id is None and pad_id(tok) == tok.eos_token_id == tok.convert_tokens_to_ids("<eos>")
