"""Stop when forgotten (grin_ui.stopping) and the training text of unlearning (end-of-turn after kept answers)."""

from dataclasses import replace

import pytest
import torch


from grin_ui.config import RunConfig, UnlearnConfig
from grin_ui.data import Record, encode, end_of_answer_ids, prompt_ids
from grin_ui.evaluate import score_items
from grin_ui.generation import generate_details, generate_ids
from grin_ui.pipeline import unlearn_pipeline
from grin_ui.tokens import pad_id
from grin_ui.train import prepare_unlearn
from tests.test_pipeline import TINY, hits


def _cfg(**unlearn):
    cfg = RunConfig(**TINY)
    cfg.unlearn = replace(cfg.unlearn, **unlearn)
    return cfg


def _last_label(batch):
    labels = batch["labels"]
    return [int(row[row != -100][-1]) for row in labels]


def _record_idk_npo(monkeypatch, pick) -> list:
    """Wrap the idk_npo objective so that each step appends ``pick(batch)`` to the returned list."""
    from grin_ui import objectives

    seen, real = [], objectives.OBJECTIVES["idk_npo"]

    def recording(model, batch, cfg):
        seen.append(pick(batch))
        return real(model, batch, cfg)

    monkeypatch.setitem(objectives.OBJECTIVES, "idk_npo", recording)
    return seen


def test_retain_and_refusal_answers_end_with_end_of_turn(tiny_lm, tiny_sets):
    tok = tiny_lm.tokenizer
    end = end_of_answer_ids(tok)[-1]
    data = prepare_unlearn(tiny_lm.model, tok, tiny_sets["forget"], tiny_sets["retain"],
                           UnlearnConfig(objective="idk", batch_size=4))
    assert data.retain and data.alt
    assert all(t == end for b in data.retain for t in _last_label(b))
    assert all(t == end for b in data.alt for t in _last_label(b))
    # forget answers are pushed down on their own tokens only: no end-of-turn label
    assert all(t != end for b in data.forget for t in _last_label(b))


def test_kept_answers_still_end_after_unlearning(tiny_lm, tiny_sets):
    res = unlearn_pipeline(tiny_lm, tiny_sets["forget"], tiny_sets["retain"], _cfg(stop_when_forgotten=False))
    gens = generate_details(tiny_lm.model, tiny_lm.tokenizer,
                            [prompt_ids(tiny_lm.tokenizer, r.question) for r in tiny_sets["retain"]], 24)
    assert res.delta.changed() > 0  # the run did change the model
    assert sum(g.finished for g in gens) >= 11  # measured: 12 of 12


def test_stops_once_forgotten_and_records_the_checks(tiny_lm, tiny_sets):
    forget, retain = tiny_sets["forget"], tiny_sets["retain"]
    res = unlearn_pipeline(tiny_lm, forget, retain, _cfg(stop_when_forgotten=True, stop_check_every=2))
    st = res.stopping
    # no holdout: the reference level is the forget questions' perturbed (wrong) answers
    assert st["reference"] == "perturbed" and st["budget_steps"] == 40
    ran = res.stats["steps_run"]
    assert st["stopped_at"] == ran < 40 and ran % 2 == 0  # measured: 14 of 40
    assert res.delta.meta["steps"] == ran and len(res.history) == ran
    checks = st["checks"]
    assert [c["step"] for c in checks] == list(range(2, ran + 1, 2))
    assert all(not c["stop"] for c in checks[:-1]) and checks[-1]["stop"]
    last = checks[-1]
    assert last["forget_nll"] >= last["reference_nll"] and last["hit_rate"] == 0.0
    assert all(c["forget_nll"] < c["reference_nll"] for c in checks[:-1] if "hit_rate" not in c)
    assert res.history[ran - 1]["check"] == last
    # the model at the stopping step: forgotten, and its forget NLL (over the fact's tokens) is the one the last
    # check measured
    assert hits(tiny_lm, forget) == 0
    stats = score_items(tiny_lm.model, encode(forget, tiny_lm.tokenizer, focus=True).items, pad_id(tiny_lm.tokenizer))
    assert abs(sum(s.nll for s in stats) / len(stats) - last["forget_nll"]) < 1e-4


def test_holdout_is_the_preferred_reference(tiny_lm, tiny_sets):
    cfg = _cfg(stop_when_forgotten=True, steps=4, stop_check_every=2)
    res = unlearn_pipeline(tiny_lm, tiny_sets["forget"], tiny_sets["retain"], cfg, holdout=tiny_sets["holdout"])
    st = res.stopping
    assert st["reference"] == "holdout" and [c["step"] for c in st["checks"]] == [2, 4]
    # the holdout facts were never taught: their answers are far less likely than the forget answers after 4 steps
    assert all(c["reference_nll"] > c["forget_nll"] + 1 for c in st["checks"]) and st["stopped_at"] is None
    assert res.stats["steps_run"] == 4


def test_rule_off_runs_the_whole_budget(tiny_lm, tiny_sets):
    res = unlearn_pipeline(tiny_lm, tiny_sets["forget"], tiny_sets["retain"], _cfg(stop_when_forgotten=False, steps=6))
    assert res.stopping is None and res.stats["steps_run"] == 6 and "check" not in res.history[-1]


def test_and_kept_waits_for_the_retain_answers(tiny_lm, tiny_sets):
    forget, retain = tiny_sets["forget"], tiny_sets["retain"]
    before = {n: p.detach().clone() for n, p in tiny_lm.model.named_parameters()}
    loose = unlearn_pipeline(tiny_lm, forget, retain, _cfg(stop_when_forgotten=True, stop_keep_margin=-1.0))
    loose.delta.undo(tiny_lm.model)
    assert all(torch.equal(p, before[n]) for n, p in tiny_lm.model.named_parameters())
    strict = unlearn_pipeline(tiny_lm, forget, retain, _cfg(stop_when_forgotten=True, stop_keep_margin=0.0))
    a, b = loose.stopping, strict.stopping
    assert a["keep_margin"] == -1.0 and "retain_nll" not in a["checks"][-1]
    assert b["retain_nll_start"] is not None and b["retain_nll_start"] < 0.05  # the tiny model knows its retain set
    # the strict rule never stops before the loose one, and where it stops the retain answers are back
    assert (b["stopped_at"] or 10**6) >= a["stopped_at"]
    # the greedy side of "kept": before unlearning the tiny model gives all 12 retain answers (a sample of ≤ 16)
    assert b["retain_sample"] == len(retain) == 12 and b["retain_hits_start"] == 12
    if b["stopped_at"] is not None:
        last = b["checks"][-1]
        assert last["stop"] and last["retain_nll"] <= b["retain_nll_start"] and last["retain_hits"] >= 11
    # every forgotten-but-not-kept check says so
    for c in b["checks"]:
        if "retain_nll" in c and not c["stop"]:
            assert c["retain_nll"] > b["retain_nll_start"]


def test_refusal_objectives_are_confirmed_greedily_at_every_check(tiny_lm, tiny_sets):
    from grin_ui.stopping import ForgetCheck

    def rule(objective):
        check = ForgetCheck.build(tiny_lm.tokenizer, tiny_sets["forget"], tiny_sets["holdout"],
                                  UnlearnConfig(objective=objective, answer_level=False))
        return check.greedy_always, check.summary(None, 80, 4)["rule"]

    # a refusal can replace the answer while the fact stays likely: IDK and FLAT are decided by the greedy answers;
    # NPO and IDK+NPO push the fact down, so the reference level is required first
    assert rule("idk") == (True, "stop when forgotten (greedy answers gone)") and rule("flat")[0]
    assert rule("idk_npo") == (False, "stop when forgotten (reference level reached, greedy answers gone)")
    assert rule("npo")[0] is False


def test_each_step_sees_the_level_of_the_latest_check(tiny_lm, tiny_sets, monkeypatch):
    seen = _record_idk_npo(monkeypatch, lambda batch: batch.level)
    cfg = _cfg(objective="idk_npo", answer_level=False, npo_hinge=True, stop_when_forgotten=True, steps=6,
               stop_check_every=2)
    res = unlearn_pipeline(tiny_lm, tiny_sets["forget"], tiny_sets["retain"], cfg, holdout=tiny_sets["holdout"])
    res.delta.undo(tiny_lm.model)
    levels = [c["reference_nll"] for c in res.stopping["checks"]]
    assert len(seen) == res.stats["steps_run"] == 6 and levels[0] > 0
    # steps 1–2 run before any check; steps 3–4 use the check after step 2, steps 5–6 the one after step 4
    assert seen == [None, None, levels[0], levels[0], levels[1], levels[1]]




def test_answer_level_pushes_the_refused_examples_still_too_likely(tiny_lm, tiny_sets):
    from grin_ui.stopping import ForgetCheck

    # as "forget": 3 of the tiny model's questions paired with a wrong answer (not given: "forgotten", yet far
    # likelier than the never-learnt holdout answers) and 3 facts it gives (still answered)
    wrong = [Record(question=r.question, answer=r.perturbed_answers[0], keywords=[r.perturbed_answers[0]])
             for r in tiny_sets["forget"][3:]]
    known = tiny_sets["forget"][:3]
    cfg = UnlearnConfig(objective="idk_npo", answer_level=True)
    check = ForgetCheck.build(tiny_lm.tokenizer, wrong, tiny_sets["holdout"], cfg)
    assert check.greedy_always and len(check.answer_items) == 3 and len(check.reference_answer_items) == 6
    m = check(tiny_lm.model, 0)
    # forgotten (no retain set: nothing to keep) but likelier than the level: the NPO phase starts, nothing stops
    assert m["hit_rate"] == 0 and not m["level_reached"] and m["answer_nll"] < m["reference_answer_nll"]
    assert m["answer_auc"] == 1.0  # every wrong answer likelier than every never-learnt one
    assert check.npo_phase and m["pushed"] == 3 and not m["stop"]
    # in the NPO phase, an example still answered is left to the refusal
    check = ForgetCheck.build(tiny_lm.tokenizer, wrong + known, tiny_sets["holdout"], cfg)
    m = check(tiny_lm.model, 0)
    assert m["hit_rate"] == 0.5 and not check.npo_phase and "pushed" not in m and check.pushed is None
    check.npo_phase = True
    m = check(tiny_lm.model, 1)
    assert m["pushed"] == 3 and check.pushed == {r.question: i < 3 for i, r in enumerate(wrong + known)}
    # off (the default), or another objective: no answer level
    for cfg in (UnlearnConfig(objective="idk_npo", answer_level=False), UnlearnConfig(objective="idk")):
        other = ForgetCheck.build(tiny_lm.tokenizer, wrong, tiny_sets["holdout"], cfg)
        assert not other.answer_items and "answer_nll" not in other(tiny_lm.model, 0)


def test_answer_level_takes_both_levels_from_one_pass(tiny_lm, tiny_sets, monkeypatch):
    from grin_ui import evaluate
    from grin_ui.stopping import ForgetCheck, _mean_nlls

    cfg = UnlearnConfig(objective="idk_npo", answer_level=True)
    check = ForgetCheck.build(tiny_lm.tokenizer, tiny_sets["forget"], tiny_sets["holdout"], cfg)
    # the fact's tokens are fewer than the whole answer's: the two levels differ
    assert [it.input_ids for it in check.forget_items] == [it.input_ids for it in check.answer_items]
    assert any(a.labels != b.labels for a, b in zip(check.forget_items, check.answer_items))
    want = _mean_nlls(tiny_lm.model, [check.forget_items, check.reference_items], pad_id(tiny_lm.tokenizer))
    passes = []
    real = evaluate.score_items
    monkeypatch.setattr(evaluate, "score_items", lambda *a, **k: passes.append(len(a[1])) or real(*a, **k))
    m = check(tiny_lm.model, 0)
    assert passes == [len(check.answer_items) + len(check.reference_answer_items)]  # one scoring pass in all
    assert m["forget_nll"] == pytest.approx(want[0], rel=1e-5)
    assert m["reference_nll"] == pytest.approx(want[1], rel=1e-5)
    assert m["forget_nll"] != pytest.approx(m["answer_nll"], rel=1e-3)


def test_answer_level_is_idk_until_forgotten_then_pushes_to_the_level(tiny_lm, tiny_sets, monkeypatch):
    seen = _record_idk_npo(monkeypatch, lambda batch: batch.npo_weight.tolist() if batch.forget is not None else None)
    forget, retain, holdout = tiny_sets["forget"], tiny_sets["retain"], tiny_sets["holdout"]
    common = dict(stop_when_forgotten=True, stop_check_every=2, stop_keep_margin=-1.0, steps=24)
    ref = unlearn_pipeline(tiny_lm, forget, retain, _cfg(objective="idk", **common), holdout=holdout)
    ref.delta.undo(tiny_lm.model)
    s = ref.stopping["stopped_at"]
    assert s is not None and 2 < s < 24  # IDK: the greedy answers are gone at step s
    res = unlearn_pipeline(tiny_lm, forget, retain, _cfg(objective="idk_npo", answer_level=True, **common),
                           holdout=holdout)
    checks = res.stopping["checks"]
    # until step s the run is IDK's, step for step (no NPO term, the forget answers outside the forward pass)
    assert [h["loss"] for h in res.history[:s]] == [h["loss"] for h in ref.history[:s]]
    assert seen[:s] == [None] * s
    # at step s the forget answers are gone but still far likelier than the never-learnt holdout answers: the
    # NPO phase starts, the run goes on, and the refused examples are pushed
    at = checks[s // 2 - 1]
    assert at["hit_rate"] == 0 and not at["level_reached"] and at["pushed"] > 0 and not at["stop"]
    assert res.stats["steps_run"] > s and any(w is not None and sum(w) > 0 for w in seen[s:])
    assert checks[-1]["answer_nll"] > at["answer_nll"]  # pushed towards the level


def test_answer_level_without_a_check_is_idk(tiny_lm, tiny_sets, monkeypatch):
    seen = _record_idk_npo(monkeypatch, lambda batch: batch.forget)
    # no stop check (rule off) or no reference: nothing says the answers are too likely, so NPO never pushes
    forget, retain = tiny_sets["forget"], tiny_sets["retain"]
    runs = []
    for objective in ("idk", "idk_npo"):
        res = unlearn_pipeline(tiny_lm, forget, retain, _cfg(objective=objective, stop_when_forgotten=False, steps=6))
        res.delta.undo(tiny_lm.model)
        runs.append([h["loss"] for h in res.history])
    assert runs[0] == runs[1] and len(runs[0]) == 6 and seen == [None] * 6
    plain = [Record(question=r.question, answer=r.answer) for r in forget]  # no wrong answers, no holdout
    res = unlearn_pipeline(tiny_lm, plain, retain, _cfg(objective="idk_npo", stop_when_forgotten=True, steps=8))
    res.delta.undo(tiny_lm.model)
    assert res.stopping["reference"] == "none" and len(seen) == 6 + res.stats["steps_run"]
    assert seen == [None] * len(seen)
