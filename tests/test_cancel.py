"""Cancel everywhere (grin_ui.cancel): scoring, evaluation, probes and unlearning stop at their next token, batch or
step once the visitor's cancel flag is set; the model is left bit for bit as it was, with no gradients, and the
session keeps its previous results."""

import pytest
import torch

from grin_ui import session as S
from grin_ui.config import RunConfig
from grin_ui.data import ExampleSet
from grin_ui.errors import Cancelled
from grin_ui.store import SessionStore
from tests import tiny


@pytest.fixture
def store(tiny_dir):
    st = SessionStore(default_model=tiny_dir)
    s = st.get("a")
    for name, recs in (("forget", tiny.FORGET), ("retain", tiny.RETAIN), ("holdout", tiny.HOLDOUT)):
        S.load_data(st, s, name, ExampleSet(list(recs), name))
    return st


def snapshot(model) -> dict:
    return {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}


def assert_untouched(model, before: dict) -> None:
    for n, p in model.named_parameters():
        w, flag = before[n]
        assert torch.equal(p, w) and p.requires_grad == flag and p.grad is None, n


def cancel_on(session, words: str):
    """A progress callback that presses Cancel when it hears ``words``."""
    def say(msg, frac=None):
        if words in msg:
            session.cancel.set()
    return say


def test_cancel_scoring(store):
    s = store.get("a")
    model = store.base(s).lm.model
    before = snapshot(model)
    with pytest.raises(Cancelled):
        S.compute_scores(store, s, progress=cancel_on(s, "forget gradients"))
    assert_untouched(model, before)
    assert s.scores is None


def test_cancel_evaluation_then_a_fresh_action_runs(store):
    s = store.get("a")
    model = store.base(s).lm.model
    before = snapshot(model)
    with pytest.raises(Cancelled):
        with s.action("comparison"):
            S.evaluate(store, s, "original", utility=False, progress=cancel_on(s, "Generating the answers"))
    assert_untouched(model, before)
    assert s.evals == {} and not s.cancel.is_set()  # the flag does not outlive its action
    ev = S.evaluate(store, s, "original", utility=False)
    assert ev["forget"]["answer_hit_rate"] == 1.0


def test_cancel_probe_and_unlearning(store):
    s = store.get("a")
    model = store.base(s).lm.model
    before = snapshot(model)
    cfg = RunConfig(utility=False)
    cfg.unlearn.steps = 6
    res = S.unlearn(store, s, cfg)
    assert not res.cancelled and s.delta is not None
    delta = s.delta
    assert_untouched(model, before)
    with pytest.raises(Cancelled):
        S.probe(store, s, ["rtn4"], progress=cancel_on(s, "quantizing the unlearned"))
    assert_untouched(model, before)
    assert s.probes == {} and s.delta is delta
    s.cancel.clear()
    cfg2 = RunConfig(utility=False)
    cfg2.unlearn.steps = 20
    res2 = S.unlearn(store, s, cfg2, progress=cancel_on(s, "step 2/"))
    assert res2.cancelled and s.delta is delta  # the previous result stays
    assert_untouched(model, before)
