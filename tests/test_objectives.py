import functools
import math

import pytest
import torch
import torch.nn.functional as F

from grin_ui.config import UnlearnConfig
from grin_ui.data import answer_token_ids, batches, encode
from grin_ui.objectives import (OBJECTIVES, READS, REFUSALS, joint_step_batch, kl_to_reference, label_logits,
                                mean_token_prob, nll, reference_topk, sequence_logprobs)
from grin_ui.train import prepare_unlearn, train_masked


def one_batch(lm, records):
    return next(batches(encode(records, lm.tokenizer).items, len(records), lm.tokenizer.pad_token_id))


def manual_logprobs(model, b):
    """Per example: list of log π(label token), straight from the logits."""
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, -1)
    out = []
    for i in range(len(b["input_ids"])):
        out.append([logp[i, t - 1, b["labels"][i, t]].item() for t in range(1, b["labels"].shape[1])
                    if b["labels"][i, t] != -100])
    return out


def test_sequence_logprobs_and_nll_match_logits(tiny_lm, tiny_sets):
    b = one_batch(tiny_lm, tiny_sets["forget"] + tiny_sets["retain"][:3])
    ref = manual_logprobs(tiny_lm.model, b)
    with torch.no_grad():
        total, count = sequence_logprobs(tiny_lm.model, b)
        p = mean_token_prob(tiny_lm.model, b)
        loss = nll(tiny_lm.model, b)
        hf = tiny_lm.model(**b).loss
    assert count.tolist() == [len(r) for r in ref]
    assert total.tolist() == pytest.approx([sum(r) for r in ref], abs=1e-4)
    assert p.tolist() == pytest.approx([sum(math.exp(x) for x in r) / len(r) for r in ref], abs=1e-5)
    assert loss.item() == pytest.approx(-sum(map(sum, ref)) / sum(map(len, ref)), rel=1e-5)
    assert loss.item() == pytest.approx(hf.item(), rel=1e-4)  # the same mean NLL transformers reports


def step_batch(lm, tiny_sets, objective, **kw):
    cfg = UnlearnConfig(objective=objective, batch_size=6, **kw)
    data = prepare_unlearn(lm.model, lm.tokenizer, tiny_sets["forget"], tiny_sets["retain"], cfg, seed=0)
    return cfg, data


def test_values_at_the_reference_model(tiny_lm, tiny_sets):
    """At π = π_ref each objective has the value its formula gives, with the sign it says."""
    model = tiny_lm.model
    cfg, data = step_batch(tiny_lm, tiny_sets, "npo", retain_loss="kl")
    b = data.step_batch(0)
    with torch.no_grad():
        loss, f, r = OBJECTIVES["npo"](model, b, cfg)
        assert f.item() == pytest.approx((2 / 0.1) * math.log(2), rel=1e-5)  # -(2/β) log σ(0)
        assert abs(r.item()) < 1e-5  # KL(π_ref ‖ π_ref) = 0
        assert loss.item() == pytest.approx(f.item() + r.item())
        nf = nll(model, b.forget)
        loss, f, r = OBJECTIVES["grad_ascent"](model, b, cfg)
        assert r is None and f.item() == pytest.approx(-nf.item()) and f.item() < 0
        loss, f, r = OBJECTIVES["grad_diff"](model, b, UnlearnConfig(alpha=2.0))
        assert loss.item() == pytest.approx(-nf.item() + 2.0 * nll(model, b.retain).item(), rel=1e-5)
        logp, n = sequence_logprobs(model, b.forget)
        loss, f, r = OBJECTIVES["simnpo"](model, b, cfg)
        assert f.item() == pytest.approx((-(2 / 4.5) * F.logsigmoid(-(4.5 / n) * logp)).mean().item(), rel=1e-5)
        assert 0 < f.item() < (2 / 4.5) * math.log(2)  # answers well known: σ argument > 0

    cfg, data = step_batch(tiny_lm, tiny_sets, "flat")
    b = data.step_batch(0)
    answers = tiny_lm.tokenizer.batch_decode(b.alt["input_ids"], skip_special_tokens=True)
    assert all(any(a.rstrip().endswith(t) for t in REFUSALS) for a in answers)
    with torch.no_grad():
        p_e, p_f = mean_token_prob(model, b.alt), mean_token_prob(model, b.forget)
        loss, f, r = OBJECTIVES["flat"](model, b, cfg)
        assert r is None
        assert f.item() == pytest.approx((-0.5 * torch.tanh(p_e) + 0.5 * torch.tanh(p_f)).mean().item(), rel=1e-5)
        assert 0 < f.item() < 0.5  # forget answers are likelier than refusals before unlearning
        loss, f, r = OBJECTIVES["flat"](model, b, UnlearnConfig(flat_form="kl"))
        assert f.item() == pytest.approx((-p_e + torch.exp(p_f - 1)).mean().item(), rel=1e-5)
        loss, f, r = OBJECTIVES["idk"](model, b, cfg)
        assert f.item() == pytest.approx(nll(model, b.alt).item()) and f.item() > 1.0  # refusals unknown yet

    cfg, data = step_batch(tiny_lm, tiny_sets, "idk_npo", idk_npo_weight=0.5)
    b = data.step_batch(0)
    with torch.no_grad():
        loss, f, r = OBJECTIVES["idk_npo"](model, b, cfg)
        # at π = π_ref the NPO term is (2/β) log 2, weighted 0.5, beside the refusal NLL
        assert f.item() == pytest.approx(nll(model, b.alt).item() + 0.5 * (2 / 0.1) * math.log(2), rel=1e-5)
        assert loss.item() == pytest.approx(f.item() + 5.0 * r.item(), rel=1e-5)

    # the hinge: examples whose fact NLL per token is already at the level are not pushed
    cfg.npo_hinge = True
    logp, n = sequence_logprobs(model, b.forget)
    per_nll = (-logp / n).detach()
    with torch.no_grad():
        b.level = None  # no check yet: the plain NPO term
        assert OBJECTIVES["idk_npo"](model, b, cfg)[1].item() == pytest.approx(f.item(), rel=1e-5)
        b.level = float(per_nll.max()) + 1  # every example still below the level: pushed, as without the hinge
        assert OBJECTIVES["idk_npo"](model, b, cfg)[1].item() == pytest.approx(f.item(), rel=1e-5)
        b.level = float(per_nll.min()) - 1  # every example past the level: the refusal alone
        assert OBJECTIVES["idk_npo"](model, b, cfg)[1].item() == pytest.approx(nll(model, b.alt).item(), rel=1e-5)
        b.level = float(per_nll.median())  # some pushed, some not
        below = (per_nll < b.level).float()
        npo = -(2 / 0.1) * math.log(0.5)  # per example at π = π_ref
        want = nll(model, b.alt).item() + 0.5 * npo * below.mean().item()
        assert OBJECTIVES["idk_npo"](model, b, cfg)[1].item() == pytest.approx(want, rel=1e-5)


def test_retain_refusal_weight_adds_the_refusal_start_term(tiny_lm, tiny_sets):
    """retain_refusal_weight w: the retain term gains w × mean over retain examples of −log(1 − P), P the
    probability (read from the logits by hand) that the answer's first token is one the refusals begin with."""
    model = tiny_lm.model
    cfg, data = step_batch(tiny_lm, tiny_sets, "idk", retain_refusal_weight=3.0)
    b = data.step_batch(0)
    assert step_batch(tiny_lm, tiny_sets, "idk")[1].refusal_starts is None  # off by default: not prepared
    want_starts = sorted({answer_token_ids(tiny_lm.tokenizer, a)[0] for a in REFUSALS})
    assert b.refusal_starts.tolist() == want_starts
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=b.retain["input_ids"],
                                       attention_mask=b.retain["attention_mask"]).logits, -1)
        terms = []
        for i in range(b.retain["input_ids"].shape[0]):
            t = int((b.retain["labels"][i] != -100).nonzero()[0])
            if int(b.retain["labels"][i, t]) in want_starts:
                continue
            terms.append(-math.log(1 - sum(logp[i, t - 1, k].exp().item() for k in want_starts)))
        assert terms
        cfg.retain_refusal_weight = 0.0  # off: the plain NLL
        plain = OBJECTIVES["idk"](model, b, cfg)[2].item()
        assert plain == pytest.approx(nll(model, b.retain).item(), rel=1e-5)
        cfg.retain_refusal_weight = 3.0
        got = OBJECTIVES["idk"](model, b, cfg)[2].item()
        assert got == pytest.approx(plain + 3.0 * sum(terms) / len(terms), rel=1e-5)


def test_kl_retain_term_grows_when_the_model_moves(tiny_lm, tiny_sets):
    model = tiny_lm.model
    b = one_batch(tiny_lm, tiny_sets["retain"])
    ref = reference_topk(model, [b])[0]
    with torch.no_grad():
        assert abs(kl_to_reference(label_logits(model, b)[0], ref).item()) < 1e-5
        model.model.norm.weight.mul_(0.5)  # soften the output distribution
        kl = kl_to_reference(label_logits(model, b)[0], ref).item()
    assert kl > 0.1


@pytest.mark.parametrize("objective", ["grad_ascent", "grad_diff", "npo", "simnpo", "idk", "idk_npo", "flat"])
def test_each_objective_decreases_its_own_loss(tiny_lm, tiny_sets, objective):
    cfg, data = step_batch(tiny_lm, tiny_sets, objective)
    fn = OBJECTIVES[objective]
    model = tiny_lm.model
    with torch.no_grad():
        before = fn(model, data.step_batch(0), cfg)[0].item()
    train_masked(model, lambda step: fn(model, data.step_batch(0), cfg), steps=4, masks=None, lr=2e-3,
                 max_grad_norm=1.0)
    with torch.no_grad():
        after = fn(model, data.step_batch(0), cfg)[0].item()
    assert after < before - 0.01 * max(1.0, abs(before)), (before, after)


@pytest.mark.parametrize("objective,kw", [("idk", {}), ("idk_npo", {"retain_refusal_weight": 1.0}),
                                          ("grad_diff", {"retain_loss": "kl"}), ("flat", {}), ("npo", {"alpha": 0.0})])
def test_joint_step_batch_gives_the_loss_and_gradients_of_separate_passes(tiny_lm, tiny_sets, objective, kw):
    model = tiny_lm.model
    cfg, data = step_batch(tiny_lm, tiny_sets, objective, **kw)
    b = data.step_batch(1)
    b.level = 2.0
    calls = []
    forward = type(model).forward

    def run(batch):
        model.zero_grad()
        loss, f, r = OBJECTIVES[objective](model, batch, cfg)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    def counting(self, *a, **k):
        calls.append(k["input_ids"].shape[0])
        return forward(self, *a, **k)

    try:
        type(model).forward = functools.wraps(forward)(counting)
        sep_loss, sep_grads = run(b)
        n_sep = len(calls)
        calls.clear()
        joint_loss, joint_grads = run(joint_step_batch(model, b, cfg))
    finally:
        type(model).forward = forward
        model.zero_grad()
    reads = [n for n in READS[objective] if n != "retain" or cfg.alpha != 0]
    assert n_sep == len(reads) and len(calls) == (1 if len(reads) > 1 else len(reads))  # one pass for every batch
    if len(reads) > 1:
        assert calls == [sum(getattr(b, n)["input_ids"].shape[0] for n in reads)]
    torch.testing.assert_close(joint_loss, sep_loss, atol=1e-5, rtol=1e-5)
    assert joint_grads.keys() == sep_grads.keys()
    for name, g in sep_grads.items():
        torch.testing.assert_close(joint_grads[name], g, atol=1e-5, rtol=1e-4)
