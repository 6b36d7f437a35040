"""Per-visitor state over a shared base model: one load per spec, isolation, LRU eviction, deltas under the lock."""

import threading
import time

import pytest
import torch

from grin_ui.data import parse_text
from grin_ui.delta import SparseDelta
from grin_ui.errors import GrinError
from grin_ui.models import load_model
from grin_ui.registry import ModelRegistry
from grin_ui.store import SessionStore


@pytest.fixture
def store(tiny_dir):
    calls = []

    def loader(spec, **kw):
        calls.append(spec)
        time.sleep(0.2)  # widen the window for concurrent loads
        return load_model(spec, device="cpu")

    s = SessionStore(default_model=tiny_dir, max_sessions=3, registry=ModelRegistry(loader=loader))
    s.calls = calls
    return s


def _delta_for(model) -> SparseDelta:
    """Change 5 entries of one weight matrix and capture the change as a delta; the model is restored after."""
    name = next(n for n, p in model.named_parameters() if n.endswith("q_proj.weight"))
    p = dict(model.named_parameters())[name]
    mask = torch.zeros_like(p, dtype=torch.bool)
    mask.view(-1)[:5] = True
    originals = SparseDelta.snapshot(model, {name: mask})
    with torch.no_grad():
        p.view(-1)[:5] += 1.0
    delta = SparseDelta.capture(model, originals)
    delta.undo(model)
    return delta


def test_model_loaded_once_and_shared(store, tiny_dir):
    a, b = store.get("a"), store.get("b")
    bases = []
    threads = [threading.Thread(target=lambda s=s: bases.append(store.base(s))) for s in (a, b, a)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.calls) == 1
    assert bases[0] is bases[1] is bases[2]
    assert bases[0].lm.model is store.base(b).lm.model
    assert store.models.loaded() == [tiny_dir]


def test_sessions_isolated(store):
    a, b = store.get("a"), store.get("b")
    a.set_data("forget", parse_text("Q: Who?\nA: Ann"))
    b.set_data("forget", parse_text("Q: Where?\nA: Bonn"))
    assert store.get("a").sets["forget"].records[0].answer == "Ann"
    assert store.get("b").sets["forget"].records[0].answer == "Bonn"
    a.evals["original"] = {"forget": {"answer_hit_rate": 1.0}}
    assert b.evals == {}
    assert store.get("a") is a and store.get("b") is not a


def test_lru_eviction_at_cap(store):
    for sid in ("a", "b", "c"):
        store.get(sid).notices.append(sid)
    store.get("a")  # a is now more recent than b
    store.get("d")
    assert len(store) == 3
    assert "b" not in store and {"a", "c", "d"} <= set(store.ids())
    assert store.get("a").notices == ["a"]  # kept its state
    assert store.get("b").notices == []  # a fresh session


def test_busy_session_not_evicted(store):
    a = store.get("a")
    store.get("b"), store.get("c")
    with a.action("test"):
        store.get("d")
        assert "a" in store and "b" not in store


def test_second_action_refused(store):
    a = store.get("a")
    with a.action("unlearning"):
        with pytest.raises(GrinError, match="still running"):
            with a.action("probe"):
                pass
    with a.action("probe"):  # free again
        pass


def test_run_on_model_applies_and_undoes_delta(store):
    s = store.get("a")
    model = store.base(s).lm.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    s.delta = _delta_for(model)
    (name,) = s.delta.entries
    seen = store.run_on_model(s, lambda lm: dict(lm.model.named_parameters())[name].detach().clone(), unlearned=True)
    assert torch.equal(seen.view(-1)[:5], before[name].view(-1)[:5] + 1.0)
    assert torch.equal(seen.view(-1)[5:], before[name].view(-1)[5:])
    for n, p in model.named_parameters():  # original again, bit for bit
        assert torch.equal(p, before[n])
    orig = store.run_on_model(s, lambda lm: dict(lm.model.named_parameters())[name].detach().clone())
    assert torch.equal(orig, before[name])


def test_delta_undone_when_function_fails(store):
    s = store.get("a")
    model = store.base(s).lm.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    s.delta = _delta_for(model)

    def boom(lm):
        raise GrinError("bad input")

    with pytest.raises(GrinError):
        store.run_on_model(s, boom, unlearned=True)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert not store.base(s).lock.locked()


def test_other_sessions_wait_for_the_lock(store):
    a, b = store.get("a"), store.get("b")
    order, messages = [], []
    started = threading.Event()

    def slow(lm):
        started.set()
        time.sleep(1.2)
        order.append("a")

    t = threading.Thread(target=lambda: store.run_on_model(a, slow))
    t.start()
    started.wait()
    store.run_on_model(b, lambda lm: order.append("b"), progress=messages.append)
    t.join()
    assert order == ["a", "b"]
    assert messages and "another visitor" in messages[0]


def test_unlearned_without_delta_is_a_clear_error(store):
    with pytest.raises(GrinError, match="Unlearn"):
        store.run_on_model(store.get("a"), lambda lm: None, unlearned=True)


def test_new_data_clears_downstream_results(store):
    s = store.get("a")
    s.scores, s.mask, s.delta, s.relearn = object(), object(), object(), {"recovery": {}}
    s.evals["original"] = {}
    s.set_data("retain", parse_text("Q: x?\nA: y"))
    assert s.scores is None and s.mask is None and s.delta is None and s.evals == {} and s.relearn is None
    s.relearn = {"recovery": {}}
    s.clear_unlearned()  # a new unlearning run: the relearning result of the old delta goes
    assert s.relearn is None
    with pytest.raises(GrinError, match="Unknown data set"):
        s.set_data("other", parse_text("Q: x?\nA: y"))
    with pytest.raises(GrinError, match="forget set"):
        s.require("forget")


def test_scores_released_beyond_cap(tiny_dir):
    store = SessionStore(default_model=tiny_dir, max_sessions=8, max_scored=2)
    a, b, c = store.get("a"), store.get("b"), store.get("c")
    store.store_scores(a, "A")
    store.store_scores(b, "B")
    store.store_scores(c, "C")
    assert a.scores is None and b.scores == "B" and c.scores == "C"
    assert "released" in a.pop_notices()[0] and a.notices == []


def test_neighbours_change_only_the_evaluations(store):
    s = store.get("a")
    s.set_data("forget", parse_text("Q: Who?\nA: Ann"))
    s.scores, s.mask, s.delta, s.result = object(), object(), object(), object()
    s.evals["unlearned"], s.probes["nf4"], s.relearn = {}, {}, {"recovery": {}}
    s.set_data("neighbours", parse_text("Q: Where?\nA: Bonn"))
    assert s.scores is not None and s.mask is not None and s.delta is not None and s.result is not None
    assert s.evals == {} and s.probes == {} and s.relearn is None
    s.evals["original"] = {}
    s.clear_data("neighbours")
    assert "neighbours" not in s.sets and s.evals == {} and s.delta is not None
    s.set_data("holdout", parse_text("Q: Why?\nA: So"))  # the holdout feeds the stopping check: results go
    assert s.scores is None and s.delta is None


def test_baselines_over_seeds(store):
    """The baseline comparison runs every selection at every seed from the original model (the session's scores,
    data and results untouched), with a 95 % interval per metric; the report notes carry it."""
    from grin_ui import selection_compare as SC
    from grin_ui import session as S
    from grin_ui.config import RunConfig
    from tests import tiny

    s = store.get("b")
    for name, recs in (("forget", tiny.FORGET), ("retain", tiny.RETAIN), ("holdout", tiny.HOLDOUT)):
        s.set_data(name, parse_text("\n".join(f"Q: {r.question}\nA: {r.answer}" for r in recs)))
    cfg = RunConfig()
    cfg.unlearn.steps, cfg.unlearn.stop_when_forgotten, cfg.eval.max_new_tokens = 3, False, 8
    variants = (("GRIN", "grin"), ("random", "random"))
    out = S.baselines(store, s, cfg, variants=variants, seeds=(0, 1, 2))
    assert list(out) == ["GRIN", "random"] and s.baselines is out and s.delta is None
    for label, r in out.items():
        assert r["seeds"] == [0, 1, 2] and len(r["runs"]) == 3 and r["lr"] == cfg.unlearn.lr
        for m in S.BASELINE_METRICS:
            assert r[m] == SC.interval([run.get(m) for run in r["runs"]]), m
        assert r["seconds"]["n"] == 3 and r["seconds"]["mean"] > 0
    assert len({run["mask"] for run in out["random"]["runs"]}) == 3  # a new random draw per seed
    assert len({run["mask"] for run in out["GRIN"]["runs"]}) == 1  # GRI masks come from the scores alone
    scores = s.scores
    assert scores is not None  # scored once for both, kept for the Influence tab
    S.baselines(store, s, cfg, variants=(("GRIN", "grin"),), seeds=(0,))
    assert s.scores is scores  # reused, not recomputed
    note = S._baseline_note("random", out["random"])
    assert note.startswith("Baseline 'random' (random, lr 0.002, seeds 0, 1, 2)") and "95 % interval" in note
