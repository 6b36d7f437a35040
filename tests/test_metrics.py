"""The §4 metric functions on small hand-computed cases."""

import numpy as np
import pytest

from grin_ui import metrics as M
from grin_ui.errors import GrinError


def test_rouge_l_recall_lcs_and_stemming():
    # reference tokens: the cat sat on the mat (6); LCS with "the cat is on a mat" = the, cat, on, mat (4)
    assert M.rouge_l_recall("the cat is on a mat", "the cat sat on the mat") == pytest.approx(4 / 6)
    # stemming: cats -> cat, sitting/sits -> sit; "the" is missing -> 2 of 3
    assert M.rouge_l_recall("cats sitting", "the cat sits") == pytest.approx(2 / 3)
    assert M.rouge_l_recall("Paris.", "Paris") == 1.0
    assert M.rouge_l_recall("", "Paris") == 0.0


def test_normalize_and_answer_hit():
    assert M.normalize("The capital of  France is PARIS!") == "capital of france is paris"
    assert M.answer_hit("It is, of course, Paris.", "paris", [])
    assert M.answer_hit("Velmora Quist was born in Tarsk!", "Velmora Quist was born in Tarsk.", [])
    assert M.answer_hit("She was born in TARSK, I think", "Velmora Quist was born in Tarsk.", ["Tarsk"])
    assert not M.answer_hit("She was born in Tarskova", "Velmora Quist was born in Tarsk.", ["Tarsk"])
    assert not M.answer_hit("I do not know.", "Velmora Quist was born in Tarsk.", ["Tarsk"])


def test_truth_ratio_and_aggregations():
    assert M.truth_ratio([0.2, 0.4], 0.5) == pytest.approx(0.6)  # mean 0.3 / 0.5
    assert M.truth_ratio([0.1], 0.05) == pytest.approx(2.0)
    ratios = [0.6, 2.0]
    assert M.truth_ratio_forget(ratios) == pytest.approx((0.6 + 0.5) / 2)  # min(R, 1/R)
    assert M.truth_ratio_other(ratios) == pytest.approx((0.4 + 0.0) / 2)  # max(0, 1 - R)
    with pytest.raises(GrinError):
        M.truth_ratio([], 0.5)


def test_zlib_score():
    # zlib.compress(b"abc") is 11 bytes (2 header + 5 deflate + 4 checksum)
    assert M.zlib_score(10.0, "abc") == pytest.approx(10 / 11)
    # a repetitive text compresses well: same NLL gives a higher (less member-like) statistic per byte
    assert M.zlib_score(10.0, "ab" * 50) == pytest.approx(10 / 13)


def test_zlib_score_uses_the_mean_nll_per_token():
    # Carlini et al.: log-perplexity / zlib bytes. Token log-probs -1, -2, -3 -> mean NLL 2.0 nats (sum 6.0)
    token_logprobs = [-1.0, -2.0, -3.0]
    nll_mean = -sum(token_logprobs) / len(token_logprobs)
    assert M.zlib_score(nll_mean, "abc") == pytest.approx(2.0 / 11)
    # a longer text at the same per-token NLL: only the compressed size changes the statistic, not the number of
    # scored tokens (a summed NLL would grow with the length and rank texts by length instead of by surprise)
    assert M.zlib_score(nll_mean, "ab" * 50) == pytest.approx(2.0 / 13)
    assert M.zlib_score(nll_mean, "ab" * 50) / M.zlib_score(nll_mean, "abc") == pytest.approx(11 / 13)


def test_min_k():
    lp = [-1.0, -2.0, -3.0, -4.0, -5.0]
    assert M.min_k(lp, 0.4) == pytest.approx(-4.5)  # lowest floor(0.4 * 5) = 2 tokens: -5, -4
    assert M.min_k(lp, 0.1) == pytest.approx(-5.0)  # at least one token
    assert M.min_k(lp, 1.0) == pytest.approx(-3.0)
    with pytest.raises(GrinError):
        M.min_k(lp, 0.0)


def test_min_k_plus_plus():
    lp, mu, sigma = [-1.0, -2.0, -3.0], [-2.0, -2.0, -2.0], [1.0, 2.0, 0.5]
    # z = (lp - mu) / sigma = [1, 0, -2]
    assert M.min_k_plus_plus(lp, mu, sigma, 0.4) == pytest.approx(-2.0)  # floor(1.2) = 1 lowest
    assert M.min_k_plus_plus(lp, mu, sigma, 0.7) == pytest.approx(-1.0)  # floor(2.1) = 2 lowest: -2, 0
    assert M.min_k_plus_plus([-1.0], [-1.0], [0.0]) == pytest.approx(0.0)  # sigma floored, no division by zero


def test_auc_and_mia_score():
    assert M.auc([3, 4, 5], [0, 1, 2]) == 1.0
    assert M.auc([0, 1, 2], [3, 4, 5]) == 0.0
    assert M.auc([1, 2, 3], [1, 2, 3]) == 0.5
    # pairs: 3 vs (1,2,3) = 2.5, 4 and 5 beat all three = 6 -> 8.5 / 9
    assert M.auc([3, 4, 5], [1, 2, 3]) == pytest.approx(8.5 / 9)
    assert M.mia_score(1.0) == 0.0
    assert M.mia_score(0.5) == 1.0
    assert M.mia_score(0.25) == pytest.approx(0.5)
    with pytest.raises(GrinError):
        M.auc([], [1.0])


def test_forget_quality_ks():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 60).tolist()
    assert M.forget_quality(a, a) == pytest.approx(1.0)
    assert M.forget_quality(a, rng.normal(0, 1, 60).tolist()) > 0.05
    assert M.forget_quality(a, rng.normal(3, 1, 60).tolist()) < 1e-6


def test_semeval_aggregate_and_final():
    # harmonic mean of (1 - 0.2, 1 - 0.0, 0.9, 1.0)
    expected = 4 / (1 / 0.8 + 1 / 1.0 + 1 / 0.9 + 1 / 1.0)
    assert M.semeval_aggregate(0.2, 0.0, 0.9, 1.0) == pytest.approx(expected)
    assert M.semeval_aggregate(0.2, 1.0, 0.9, 1.0) == 0.0  # forget hit rate 1 -> a zero component
    assert M.semeval_final(0.6, 0.9, 0.3) == pytest.approx(0.6)
    assert M.semeval_final(0.6, None, 0.3) is None


def test_recovery_pct():
    assert M.recovery_pct(1.0, 0.0, 0.8) == pytest.approx(80.0)
    assert M.recovery_pct(0.9, 0.1, 0.5) == pytest.approx(50.0)
    assert M.recovery_pct(1.0, 0.2, 0.1) == pytest.approx(-12.5)
    assert M.recovery_pct(0.5, 0.5, 0.9) is None
    assert M.recovery_pct(0.5, 0.5 + 1e-9, 0.9) is None
