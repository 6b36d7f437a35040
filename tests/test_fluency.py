"""Fluency measures (grin_ui.fluency): loops, refusals, the gibberish cut-off, and the per-set summary."""

import pytest

from grin_ui.fluency import (GIBBERISH_FLOOR, GIBBERISH_MARGIN, answer_nll, fluency_summary, gibberish_threshold,
                             is_refusal, loops)
from tests import tiny


@pytest.mark.parametrize("text", ["Il nostro nostro nostro nostro", "El Diablo, el Diablo, el Diablo, el Diablo",
                                  "Mars is known as the Red Planet. Mars is known as the Red Planet. The end."])
def test_loops_are_found(text):
    assert loops(text)


@pytest.mark.parametrize("text", ["The capital of France is Paris.", "A week has seven days, seven in all.",
                                  "Paris is Paris."])
def test_ordinary_answers_do_not_loop(text):
    assert not loops(text)


def test_refusals():
    assert is_refusal("I don't know.") and is_refusal("That's beyond what I know.")
    assert is_refusal("Sorry, I can't say.") and is_refusal("i have no idea")
    # a refusal template cut short, and the contracted openings written without a space or with a curly apostrophe
    assert is_refusal("I'd rather not guess.") and is_refusal("I'm not certain.") and is_refusal("I’m afraid not.")
    assert not is_refusal("Iceland's capital is Reykjavik.") and not is_refusal("I'm told it is Oslo.")
    assert not is_refusal("The capital of Cuba is Havana.") and not is_refusal("") and not is_refusal("Sorrento.")


def test_gibberish_threshold_is_calibrated_on_the_original_answers():
    own = [0.2, 0.3, 0.5] * 6 + [1.5, 2.4]  # 20 answers: the 95th percentile is the 19th smallest, 1.5
    assert gibberish_threshold(own) == pytest.approx(1.5 + GIBBERISH_MARGIN)
    assert gibberish_threshold([0.1, 0.2]) == GIBBERISH_FLOOR  # a confident model: the floor
    assert gibberish_threshold([None, 4.0, None]) == pytest.approx(4.0 + GIBBERISH_MARGIN)
    assert gibberish_threshold([]) == GIBBERISH_FLOOR


def test_summary_counts_ends_loops_refusals_and_gibberish():
    texts = ["Paris.", "I don't know.", "nostro nostro nostro", "zq xv"]
    out = fluency_summary([True, True, False, True], texts, [0.2, 5.0, 1.0, 6.0], threshold=3.0)
    assert out["ends_rate"] == 0.75 and out["loop_rate"] == 0.25 and out["refusal_rate"] == 0.25
    # the refusal scores 5.0 but is not gibberish; "zq xv" is
    assert out["gibberish_rate"] == 0.25 and out["gibberish_nll"] == pytest.approx((0.2 + 5.0 + 1.0 + 6.0) / 4)
    assert "gibberish_rate" not in fluency_summary([True], ["x"])


def test_answer_nll_separates_the_trained_answer_from_salad(tiny_lm):
    r = tiny.FORGET[0]
    good, salad, empty = answer_nll(tiny_lm.model, tiny_lm.tokenizer, [r.question] * 3,
                                    [r.answer, "glass ballads Marrow born Fenwick writes", ""])
    assert empty is None and good < 0.5 < 2.0 < salad  # measured: ~0.01 vs ~10 nats per token
