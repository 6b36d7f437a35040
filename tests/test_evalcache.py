"""Never evaluate the same model state twice (grin_ui.evalcache): a repeated journey reuses the original model's
evaluation and its quantized copy's from the disk cache with the very same numbers; any change of weights, data or
settings misses; the dashboard quantizes the original once per data, not once per unlearning run."""

import json
from dataclasses import replace

import torch

from grin_ui import session as S
from grin_ui.cli import main
from grin_ui.config import EvalConfig, MaskConfig, NoiseConfig, RunConfig, UnlearnConfig
from grin_ui.data import ExampleSet
from grin_ui import evalcache
from grin_ui.evalcache import EvalCache, eval_key
from grin_ui.journey import records, run_journey
from grin_ui.report import weights_sha256
from grin_ui.store import SessionStore
from tests import tiny
from tests.helpers import without_seconds

TINY = dict(mask=MaskConfig("grin", 0.10, "global"), noise=NoiseConfig(0.1),
            unlearn=UnlearnConfig(objective="npo", lr=5e-3, steps=8, batch_size=8), probes=("rtn4",), utility=False)
SETS = {"forget": tiny.FORGET, "retain": tiny.RETAIN, "holdout": tiny.HOLDOUT}


def test_second_run_reuses_the_original_and_quantized_original(tiny_lm, tmp_path):
    cache = EvalCache(tmp_path / "evals", enabled=True)
    rep1, _ = run_journey(tiny_lm, SETS, RunConfig(**TINY), cache=cache)
    assert (cache.hits, cache.misses) == (0, 2)
    rep2, _ = run_journey(tiny_lm, SETS, RunConfig(**TINY), cache=cache)
    assert (cache.hits, cache.misses) == (2, 2)
    assert rep2["eval"]["original"]["forget"] == rep1["eval"]["original"]["forget"]
    assert rep2["eval"]["probes"]["rtn4"]["original"] == rep1["eval"]["probes"]["rtn4"]["original"]
    # computed again, the same (fixed seed)
    assert without_seconds(rep2["eval"]["unlearned"]) == without_seconds(rep1["eval"]["unlearned"])
    off = EvalCache(tmp_path / "evals", enabled=False)
    run_journey(tiny_lm, SETS, RunConfig(**TINY), cache=off)
    assert (off.hits, off.misses) == (0, 0)


def test_every_change_misses(tiny_lm, monkeypatch):
    recs = records(SETS)
    sha = weights_sha256(tiny_lm.model)
    key = eval_key(sha, "original", recs, EvalConfig(), False)
    assert key == eval_key(sha, "original", records(dict(SETS)), EvalConfig(), False)
    with torch.no_grad():
        next(tiny_lm.model.parameters()).view(-1)[0] += 1e-6
    changed = {
        "weights": eval_key(weights_sha256(tiny_lm.model), "original", recs, EvalConfig(), False),
        "state": eval_key(sha, "nf4:128", recs, EvalConfig(), False),
        "data": eval_key(sha, "original", {**recs, "forget": recs["forget"][:-1]}, EvalConfig(), False),
        "answer": eval_key(sha, "original", {**recs, "forget": [replace(recs["forget"][0], answer="x")]
                                             + recs["forget"][1:]}, EvalConfig(), False),
        "settings": eval_key(sha, "original", recs, EvalConfig(max_new_tokens=16), False),
        "utility": eval_key(sha, "original", recs, EvalConfig(), True),
    }
    stamp = evalcache.code_stamp()
    assert len(stamp) == 64 and stamp == evalcache.code_stamp()
    evalcache.code_stamp.cache_clear()
    monkeypatch.setattr(evalcache.Path, "read_bytes", lambda self: b"other code")  # the library's code changed
    changed["code"] = eval_key(sha, "original", recs, EvalConfig(), False)
    assert evalcache.code_stamp() != stamp
    monkeypatch.undo()
    evalcache.code_stamp.cache_clear()
    assert evalcache.code_stamp() == stamp
    assert len(set(changed.values()) | {key}) == len(changed) + 1


def test_cache_is_bounded_and_cleared(tmp_path, monkeypatch):
    monkeypatch.setenv("GRIN_UI_EVAL_CACHE_MB", "0")  # keep only the newest entry
    cache = EvalCache(tmp_path / "evals", enabled=True)
    cache.put("a" * 64, {"x": 1})
    cache.put("b" * 64, {"x": 2})
    assert cache.get("a" * 64) is None and cache.get("b" * 64) == {"x": 2}
    assert cache.clear() == 1 and cache.get("b" * 64) is None


def test_cli_cache_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GRIN_UI_CACHE", str(tmp_path))
    EvalCache().put("c" * 64, {"x": 1})
    assert main(["cache"]) == 0
    assert "evaluations: 1 entries" in capsys.readouterr().out
    assert main(["cache", "--clear"]) == 0
    assert "cleared: 1 evaluations" in capsys.readouterr().out
    assert EvalCache().get("c" * 64) is None


def test_dashboard_quantizes_the_original_once_per_data(tiny_dir):
    store = SessionStore(default_model=tiny_dir)
    s = store.get("a")
    for name, recs in SETS.items():
        S.load_data(store, s, name, ExampleSet(list(recs), name))
    cfg = RunConfig(**TINY)
    S.unlearn(store, s, cfg)
    first = S.probe(store, s, ["rtn4"])["rtn4"]["original"]
    S.unlearn(store, s, replace(cfg, seed=1))  # a new unlearning run: Q(original) is still valid
    second = S.probe(store, s, ["rtn4"])["rtn4"]
    assert second["original"] is first and "unlearned" in second
    S.load_data(store, s, "retain", ExampleSet(list(tiny.RETAIN[:6]), "retain"))  # new data: evaluated again
    S.unlearn(store, s, cfg)
    assert S.probe(store, s, ["rtn4"])["rtn4"]["original"] is not first
    assert json.dumps(first)  # what is cached is plain JSON
