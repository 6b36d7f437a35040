"""evaluate.py on the tiny fixture model, which memorized tiny.FORGET + tiny.RETAIN and never saw tiny.HOLDOUT."""

import json
import math

import pytest
import torch

from grin_ui.config import EvalConfig
from grin_ui.data import Record, batches, encode, prompt_ids
from grin_ui.evaluate import (
    choice_logprobs,
    evaluate_sets,
    load_general_text,
    load_multiple_choice,
    mc_accuracy,
    sequence_stats,
    utility_metrics,
)
from grin_ui.generation import generate_ids

CFG = EvalConfig(max_new_tokens=20)


def test_batched_generation_equals_one_at_a_time(tiny_lm, tiny_sets):
    records = tiny_sets["forget"] + tiny_sets["holdout"] + tiny_sets["retain"][:4]
    prompts = [prompt_ids(tiny_lm.tokenizer, r.question) for r in records]
    batched = generate_ids(tiny_lm.model, tiny_lm.tokenizer, prompts, max_new_tokens=16, batch_size=16)
    single = [generate_ids(tiny_lm.model, tiny_lm.tokenizer, [p], max_new_tokens=16)[0] for p in prompts]
    assert batched == single
    assert batched[0] == records[0].answer


def test_sequence_stats_match_the_model_loss_and_do_not_depend_on_batching(tiny_lm, tiny_sets):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    records = tiny_sets["forget"] + tiny_sets["holdout"]
    st8 = sequence_stats(model, tok, records, batch_size=8)
    st1 = sequence_stats(model, tok, records, batch_size=1)
    for a, b in zip(st8, st1):
        assert torch.allclose(a.logprobs, b.logprobs, atol=1e-4)
        assert torch.allclose(a.mu, b.mu, atol=1e-4) and torch.allclose(a.sigma, b.sigma, atol=1e-4)
    enc = encode(records, tok)
    for item, s in zip(enc.items, st8):
        # transformers' own mean cross-entropy over the answer labels (no end-of-turn token)
        batch = next(batches([item], 1, tok.pad_token_id))
        with torch.no_grad():
            loss = model(**batch).loss.item()
        assert s.n == sum(lab != -100 for lab in item.labels) - (item.labels[0] != -100)
        assert s.nll == pytest.approx(loss, rel=1e-4, abs=1e-5)
        assert s.prob == pytest.approx(math.exp(-loss), rel=1e-4)
    # the first scored position: mu/sigma of the model's own next-token log-prob distribution
    item = enc.items[0]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([item.input_ids])).logits[0, item.prompt_len - 1]
    lp = torch.log_softmax(logits.float(), -1)
    mu = (lp.exp() * lp).sum()
    assert st8[0].mu[0].item() == pytest.approx(mu.item(), abs=1e-4)
    assert st8[0].sigma[0].item() == pytest.approx(((lp.exp() * (lp - mu) ** 2).sum()).sqrt().item(), abs=1e-3)


def test_evaluate_sets_on_the_tiny_model(tiny_lm, tiny_sets):
    res = evaluate_sets(tiny_lm.model, tiny_lm.tokenizer, tiny_sets, CFG, utility=False)
    json.dumps(res)  # plain JSON
    for name in ("forget", "retain", "holdout"):
        s = res[name]
        assert {"n", "answer_hit_rate", "rougeL_recall", "answer_prob", "nll", "truth_ratio", "examples"} <= set(s)
        assert s["n"] == len(tiny_sets[name]) == len(s["examples"])
        for e in s["examples"]:
            assert e["answer_prob"] == pytest.approx(math.exp(-e["nll"]))
        assert s["answer_prob"] == pytest.approx(sum(e["answer_prob"] for e in s["examples"]) / s["n"])
    f, r, h = res["forget"], res["retain"], res["holdout"]
    assert f["answer_hit_rate"] == 1.0 and r["answer_hit_rate"] == 1.0
    assert f["rougeL_recall"] == 1.0
    assert h["answer_hit_rate"] < 0.5
    assert f["answer_prob"] > 0.9 > 0.1 > h["answer_prob"]
    assert f["examples"][0]["generation"] == tiny_sets["forget"][0].answer
    # R = mean P̄(perturbed) / P̄(paraphrased), recomputed from the length-normalized probabilities
    rec = tiny_sets["forget"][1]
    alts = [Record(question=rec.question, answer=a) for a in [rec.paraphrased_answer] + rec.perturbed_answers]
    probs = [st.prob for st in sequence_stats(tiny_lm.model, tiny_lm.tokenizer, alts, with_distribution=False)]
    assert f["examples"][1]["truth_ratio"] == pytest.approx(sum(probs[1:]) / len(probs[1:]) / probs[0], rel=1e-4)
    forget_scores = [min(e["truth_ratio"], 1 / e["truth_ratio"]) for e in f["examples"]]
    assert f["truth_ratio"] == pytest.approx(sum(forget_scores) / 6)
    assert r["truth_ratio"] == pytest.approx(sum(max(0, 1 - e["truth_ratio"]) for e in r["examples"]) / 12)
    mia = res["mia"]
    assert mia["loss_auc"] > 0.8 and mia["zlib_auc"] > 0.8 and mia["mink_auc"] > 0.8
    assert 0.0 <= mia["minkpp_auc"] <= 1.0
    assert mia["score"] == pytest.approx(1 - 2 * abs(mia["loss_auc"] - 0.5))
    sem = res["semeval"]
    assert sem["label"] == "SemEval-style"
    assert sem["aggregate"] == 0.0  # forget hit rate 1.0 -> a zero component of the harmonic mean
    assert sem["final"] is None and sem["missing"] == ["utility"]
    assert not tiny_lm.model.training


def test_forget_quality_against_a_reference(tiny_lm, tiny_sets):
    sets = {"forget": tiny_sets["forget"]}
    own = evaluate_sets(tiny_lm.model, tiny_lm.tokenizer, sets, CFG, utility=False)
    ratios = [e["truth_ratio"] for e in own["forget"]["examples"]]
    same = evaluate_sets(tiny_lm.model, tiny_lm.tokenizer, sets, CFG, utility=False, reference_truth_ratios=ratios)
    assert same["forget"]["forget_quality"] == pytest.approx(1.0)
    far = evaluate_sets(tiny_lm.model, tiny_lm.tokenizer, sets, CFG, utility=False,
                        reference_truth_ratios=[r + 100 for r in ratios])
    assert far["forget"]["forget_quality"] < 0.05  # fully separated 6 vs 6: the smallest p the KS test gives


def test_choice_scores_with_a_shared_prompt_equal_full_sequence_scores(tiny_lm):
    rows = [
        {"question": "Where was Velmora Quist born?", "choices": ["Tarsk", "Ombrel", "in Vesk town", "Marrow"],
         "answer": 0},
        {"question": "What does Tobiah Renn write?", "choices": ["desert noir", "sea poetry", "x", "frost sagas"],
         "answer": 0},
        {"question": "A clock has how many hands?", "choices": ["two", "three", "none", "many hands"], "answer": 0},
    ]
    shared = choice_logprobs(tiny_lm.model, tiny_lm.tokenizer, rows, batch_size=2)
    records = [Record(question=row["question"], answer=c) for row in rows for c in row["choices"]]
    full = [-s.nll_sum for s in sequence_stats(tiny_lm.model, tiny_lm.tokenizer, records, 4, with_distribution=False)]
    assert [x for row in shared for x in row] == pytest.approx(full, abs=1e-3)
    best = [max(range(4), key=row.__getitem__) for row in shared]
    assert mc_accuracy(tiny_lm.model, tiny_lm.tokenizer, rows) == pytest.approx(
        sum(b == row["answer"] for b, row in zip(best, rows)) / 3)


def test_builtin_utility_sets_and_metrics(tiny_lm):
    texts, rows = load_general_text(), load_multiple_choice()
    assert len(texts) >= 30 and len(rows) >= 40
    assert all(len(r["choices"]) == 4 for r in rows)
    u = utility_metrics(tiny_lm.model, tiny_lm.tokenizer, CFG)
    # perplexity = exp(mean NLL per predicted token) over the passages, each truncated to the 128-token context
    st = sequence_stats(tiny_lm.model, tiny_lm.tokenizer, [Record(text=t) for t in texts], 8, 128, False)
    assert u["perplexity_tokens"] == sum(s.n for s in st)
    assert u["perplexity"] == pytest.approx(math.exp(sum(s.nll_sum for s in st) / u["perplexity_tokens"]), rel=1e-6)
    assert u["perplexity"] > 10  # the tiny model knows no general English
    assert 0.0 <= u["mc_accuracy"] <= 1.0 and u["mc_n"] == len(rows)
