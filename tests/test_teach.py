import pytest
import torch

from grin_ui.config import TeachConfig
from grin_ui.models import load_model
from grin_ui.teach import hit_rate, teach, teach_cached
from tests import tiny

CFG = TeachConfig(lr=3e-3, batch_size=18, max_epochs=150, check_every=25)


def test_teach_makes_unknown_facts_known(tiny_lm):
    new_facts = tiny.HOLDOUT  # never seen by the fixture
    assert hit_rate(tiny_lm, new_facts) <= 0.5
    res = teach(tiny_lm, new_facts, tiny.RETAIN, CFG)
    assert res.before["forget"] <= 0.5
    assert res.reached and res.after["forget"] >= 0.9
    assert res.after["retain"] >= 0.9  # retain facts were trained along and stay known
    assert res.epochs < CFG.max_epochs and res.epochs % CFG.check_every == 0
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < 0.2 * losses[0]


def test_teach_cache_reuses_result(tiny_dir, tmp_path):
    lm = load_model(tiny_dir)
    path, first = teach_cached(lm, tiny.HOLDOUT, tiny.RETAIN, CFG, root=tmp_path)
    assert not first.cached
    again = load_model(tiny_dir)
    before = {n: p.clone() for n, p in again.model.named_parameters()}
    path2, second = teach_cached(again, tiny.HOLDOUT, tiny.RETAIN, CFG, root=tmp_path)
    assert path2 == path and second.cached and second.after == first.after
    assert all(torch.equal(before[n], p) for n, p in again.model.named_parameters())  # cache hit: untouched
    taught = load_model(str(path))
    assert hit_rate(taught, tiny.HOLDOUT) >= 0.9


def test_cancel_restores(tiny_lm):
    before = {n: p.clone() for n, p in tiny_lm.model.named_parameters()}
    from grin_ui.train import Cancelled

    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled):
        teach(tiny_lm, tiny.HOLDOUT, tiny.RETAIN, CFG, cancel=cancel)
    assert all(torch.equal(before[n], p) for n, p in tiny_lm.model.named_parameters())


def test_knowledge_check_is_the_evaluation_hit_rate(tiny_lm):
    """One definition of the answer hit rate: the teaching check and the evaluation agree at every generation
    length, because both take it from EvalConfig."""
    from grin_ui.config import EvalConfig
    from grin_ui.evaluate import evaluate_sets

    records = tiny.FORGET + tiny.HOLDOUT  # known and unknown facts
    rates = []
    for cfg in (EvalConfig(), EvalConfig(max_new_tokens=5)):
        ev = evaluate_sets(tiny_lm.model, tiny_lm.tokenizer, {"forget": records}, cfg, utility=False)
        rates.append(hit_rate(tiny_lm, records, cfg))
        assert rates[-1] == ev["forget"]["answer_hit_rate"]
    assert rates[0] == hit_rate(tiny_lm, records) and 0.5 <= rates[0] < 1.0
    assert rates[1] < rates[0]  # five tokens do not reach the answer: the length is part of the definition
