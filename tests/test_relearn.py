"""The relearning probe on the tiny model: split, what is trained on, restoration, recovery formula."""

import pytest
import torch

from grin_ui.config import EvalConfig
from grin_ui.data import collate, encode
from grin_ui.errors import GrinError
from grin_ui.evaluate import evaluate_sets
from grin_ui.relearn import relearn_probe, split
from grin_ui.train import Cancelled, train_masked

EVAL = EvalConfig(max_new_tokens=16)


def weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _unlearn_by_gradient_ascent(lm, forget):
    """A crude unlearned state: 6 full-model steps of gradient ascent on the forget answers."""
    batch = collate(encode(forget, lm.tokenizer).items, lm.tokenizer.pad_token_id)
    train_masked(lm.model, lambda step: -lm.model(**batch).loss, 6, None, 2e-3)


def _trained_questions(model, tokenizer, seen: list[str]):
    """A forward pre-hook that records the decoded rows of every batch the model sees in training mode."""
    def hook(module, args, kwargs):
        if module.training:
            seen.extend(tokenizer.batch_decode(kwargs["input_ids"], skip_special_tokens=True))
    return model.register_forward_pre_hook(hook, with_kwargs=True)


def test_split_is_seeded_disjoint_and_complete():
    tr, ev = split(6, seed=0)
    assert len(tr) == 3 and len(ev) == 3 and sorted(tr + ev) == list(range(6))
    assert split(6, seed=0) == (tr, ev)
    assert any(split(6, seed=s) != (tr, ev) for s in range(1, 5))
    assert [len(x) for x in split(10, 0, n_train=2)] == [2, 8]
    assert [len(x) for x in split(3, 0, train_fraction=1.0)] == [2, 1]  # always leaves one to evaluate
    with pytest.raises(GrinError, match="at least 2 examples"):
        split(1, 0)


def test_relearning_trains_only_on_its_part_restores_the_model_and_follows_the_formula(tiny_lm, tiny_sets):
    forget, holdout = tiny_sets["forget"], tiny_sets["holdout"]
    original = evaluate_sets(tiny_lm.model, tiny_lm.tokenizer, {"forget": forget}, EVAL, utility=False)
    _unlearn_by_gradient_ascent(tiny_lm, forget)
    unlearned = weights(tiny_lm.model)
    seen: list[str] = []
    handle = _trained_questions(tiny_lm.model, tiny_lm.tokenizer, seen)
    try:
        out = relearn_probe(tiny_lm, forget, holdout, steps=8, lr=2e-3, batch_size=2, seed=0, eval_cfg=EVAL,
                            original_eval=original)
    finally:
        handle.remove()
    # the model is bit-identical to the unlearned state afterwards
    assert all(torch.equal(p, unlearned[n]) for n, p in tiny_lm.model.named_parameters())
    # the split, and what was trained on: every training row holds a trained question (forget or holdout part),
    # never an evaluated one
    f_split, h_split = out["split"]["forget"], out["split"]["holdout"]
    assert (f_split, h_split) == ({"train": split(6, 0)[0], "eval": split(6, 0)[1]},
                                  {"train": split(6, 0)[0], "eval": split(6, 0)[1]})
    trained = [forget[i].question for i in f_split["train"]] + [holdout[i].question for i in h_split["train"]]
    held_out = [forget[i].question for i in f_split["eval"]] + [holdout[i].question for i in h_split["eval"]]
    assert len(seen) == 2 * 8 * 2  # two runs × 8 steps × batches of 2
    assert all(any(q in row for q in trained) for row in seen)
    assert not any(q in row for row in seen for q in held_out)
    assert {q for q in trained if any(q in row for row in seen)} == set(trained)  # and each trained part was used
    # the training text ends with the end-of-turn token (EOS for this tokenizer)
    eos = tiny_lm.tokenizer.eos_token_id
    assert all(it.labels[-1] == eos for it in encode([forget[0]], tiny_lm.tokenizer, add_end=True).items)
    # relearning raised the probability of what it trained on, in both runs
    f, ref = out["forget"], out["reference"]
    assert f["train_prob_after"] > f["train_prob_before"] + 0.05
    assert ref["train_prob_after"] > ref["train_prob_before"] + 0.05
    assert len(f["loss"]) == 8 and f["loss"][-1] < f["loss"][0]
    # the original metrics of the evaluated part are the means of the original per-example rows at those indices
    rows = [original["forget"]["examples"][i] for i in f_split["eval"]]
    assert f["original"]["answer_prob"] == pytest.approx(sum(r["answer_prob"] for r in rows) / 3)
    assert f["original"]["answer_hit_rate"] == pytest.approx(sum(r["hit"] for r in rows) / 3)
    assert f["original"]["answer_hit_rate"] == 1.0  # the tiny model knows its forget facts
    assert f["before"]["answer_prob"] < f["original"]["answer_prob"] - 0.1  # gradient ascent removed some of it
    # recovery % = 100 · (M(relearned) − M(unlearned)) / (M(original) − M(unlearned)) on the returned numbers
    for m in ("answer_prob", "rougeL_recall", "nll"):
        o, u, r = f["original"].get(m), f["before"].get(m), f["after"].get(m)
        if m in out["recovery"]:
            assert out["recovery"][m] == pytest.approx(100 * (r - u) / (o - u))
    assert out["recovery"]["answer_prob"] == pytest.approx(
        100 * (f["after"]["answer_prob"] - f["before"]["answer_prob"])
        / (f["original"]["answer_prob"] - f["before"]["answer_prob"]))
    gain = 100 * (ref["after"]["answer_prob"] - ref["before"]["answer_prob"]) / (
        f["original"]["answer_prob"] - f["before"]["answer_prob"])
    assert out["reference_gain"]["answer_prob"] == pytest.approx(gain)
    assert [e["index"] for e in f["examples"]] == f_split["eval"]
    assert out["config"]["steps"] == 8 and out["seconds"] > 0


def test_relearning_cancel_restores_the_model(tiny_lm, tiny_sets):
    before = weights(tiny_lm.model)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 3  # let three steps run, then cancel

    with pytest.raises(Cancelled, match="model was restored"):
        relearn_probe(tiny_lm, tiny_sets["forget"], None, steps=8, lr=5e-3, eval_cfg=EVAL, cancel=cancel)
    assert len(calls) == 4
    assert all(torch.equal(p, before[n]) for n, p in tiny_lm.model.named_parameters())
    assert all(p.grad is None for p in tiny_lm.model.parameters()) and not tiny_lm.model.training


def test_relearning_without_reference_or_original(tiny_lm, tiny_sets):
    out = relearn_probe(tiny_lm, tiny_sets["forget"], None, n_train=2, steps=1, lr=1e-4, eval_cfg=EVAL)
    assert out["reference"] is None and out["recovery"] is None and out["reference_gain"] is None
    assert len(out["split"]["forget"]["train"]) == 2 and out["forget"]["original"] is None
    bad = evaluate_sets(tiny_lm.model, tiny_lm.tokenizer, {"forget": tiny_sets["forget"][:3]}, EVAL, utility=False)
    with pytest.raises(GrinError, match="does not list every forget example"):
        relearn_probe(tiny_lm, tiny_sets["forget"], None, steps=1, eval_cfg=EVAL, original_eval=bad)
