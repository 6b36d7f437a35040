"""The shared-opening forward (grin_ui.prefix): the same logits as one plain pass, over fewer tokens."""

import copy
import functools

import torch

from grin_ui.data import batches, encode
from grin_ui.prefix import label_positions_logits, shared_prefix


def _batch(lm, records):
    return next(batches(encode(records, lm.tokenizer, add_end=True).items, len(records), lm.tokenizer.pad_token_id))


def _count_forward_calls(model, monkeypatch) -> list[tuple]:
    """The input_ids shape of every forward call of ``model``'s class, appended to the returned list (the wrapper
    keeps the forward's signature: grin_ui.prefix reads it)."""
    calls: list[tuple] = []
    forward = type(model).forward

    @functools.wraps(forward)
    def counting(self, *a, **k):
        calls.append(tuple(k["input_ids"].shape))
        return forward(self, *a, **k)

    monkeypatch.setattr(type(model), "forward", counting)
    return calls


def test_shared_prefix_stops_at_the_first_difference_padding_or_limit():
    ids = torch.tensor([[5, 6, 7, 8, 0], [5, 6, 7, 9, 9], [5, 6, 7, 8, 1]])
    mask = torch.ones_like(ids)
    assert shared_prefix(ids, mask, 10) == 3 and shared_prefix(ids, mask, 2) == 2
    mask[1, 1] = 0  # a padded position is never shared
    assert shared_prefix(ids, mask, 10) == 1
    assert shared_prefix(ids[:1], torch.ones_like(ids[:1]), 10) == 5


def test_same_logits_as_a_plain_pass_and_plain_when_training(tiny_lm, tiny_sets, monkeypatch):
    model = tiny_lm.model
    # "Where was … born?" questions: their prompts share "Question: Where was" before the names differ
    b = _batch(tiny_lm, [r for r in tiny_sets["retain"] if r.question.startswith("Where")])
    p = shared_prefix(b["input_ids"], b["attention_mask"], 10**6)
    assert p >= 3
    keep = torch.arange(p + 2, b["input_ids"].shape[1] - 1)
    calls = _count_forward_calls(model, monkeypatch)
    n, length = b["input_ids"].shape

    def run(min_prefix):
        calls.clear()
        with torch.no_grad():
            return label_positions_logits(model, b["input_ids"], b["attention_mask"], keep, min_prefix=min_prefix)

    plain = run(10**6)
    assert calls == [(n, length)]  # one pass over every token
    shared = run(2)
    assert calls == [(1, p), (n, length - p)]  # the opening once, then the rest of each row
    assert shared.shape == plain.shape == (n, len(keep), model.config.vocab_size)
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-4)
    # a single row: one plain pass
    calls.clear()
    with torch.no_grad():
        label_positions_logits(model, b["input_ids"][:1], b["attention_mask"][:1], keep, min_prefix=2)
    assert calls == [(1, length)]
    # recording gradients (training, GRI scoring): one plain pass — sharing did not pay there (grin_ui.prefix)
    calls.clear()
    out = label_positions_logits(model, b["input_ids"], b["attention_mask"], keep, min_prefix=2)
    assert calls == [(n, length)] and out.requires_grad
    torch.testing.assert_close(out.detach(), plain)


def test_shared_prompt_logprobs_run_each_prompt_once_with_the_scores_of_plain_passes(tiny_lm, tiny_sets, monkeypatch):
    from grin_ui.data import Record
    from grin_ui.evaluate import score_items
    from grin_ui.prefix import shared_prompt_logprobs

    model, tok = tiny_lm.model, tiny_lm.tokenizer
    recs = tiny_sets["forget"][:5]
    alts = [Record(question=r.question, answer=a) for r in recs for a in [r.paraphrased_answer, *r.perturbed_answers]]
    # a focus label mask (some answer tokens unscored) on one item, as the stopping check's encodings have
    items = encode(alts, tok).items
    items[1].labels[items[1].prompt_len] = -100
    want = [s.logprobs for s in score_items(model, items, tok.pad_token_id, 4)]
    calls = _count_forward_calls(model, monkeypatch)
    got = shared_prompt_logprobs(model, items, tok.pad_token_id, max_rows=8)
    assert len(got) == len(want) == 20 and len(got[1]) == len(want[1]) == len(items[1].labels) - items[1].prompt_len - 1
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
    # 5 prompts of 4 answers, at most 8 answers per pass: one pass over the 5 prompts (after their shared opening at
    # batch size 1 where they have one), then 3 over the answers (8 + 8 + 4 rows), sorted by length: each pass is
    # as wide as its longest answer among the sorted ones
    lengths = sorted(len(it.input_ids) - it.prompt_len for it in items)
    assert [c for c in calls if c[0] != 1][1:] == [(8, lengths[7]), (8, lengths[15]), (4, lengths[19])]
    assert calls[-4][0] == 5
    # at most 2 prompts per pass: 3 prompt passes (2 + 2 + 1), each followed by its answers (8, 8, 4 rows; the
    # one-row prompt pass is left out below with the openings)
    calls.clear()
    again = shared_prompt_logprobs(model, items, tok.pad_token_id, max_rows=8, max_prompts=2)
    assert [c[0] for c in calls if c[0] != 1] == [2, 8, 2, 8, 4]
    for g, w in zip(again, want):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)


def test_openings_reused_within_the_block_only_for_its_model(tiny_lm, monkeypatch):
    from grin_ui import prefix
    from grin_ui.prefix import openings_reused

    monkeypatch.setattr(prefix, "MIN_PREFIX", 4)
    model = tiny_lm.model
    g = torch.Generator().manual_seed(0)
    opening = torch.randint(5, model.config.vocab_size, (10,), generator=g)

    def batch(head: torch.Tensor, n: int = 3, rest: int = 6) -> torch.Tensor:
        return torch.cat([head.expand(n, -1), torch.randint(5, model.config.vocab_size, (n, rest), generator=g)], 1)

    a = batch(opening)
    b = batch(torch.cat([opening[:7], torch.randint(5, model.config.vocab_size, (5,), generator=g)]))  # 12 shared
    calls = _count_forward_calls(model, monkeypatch)

    def logits(ids):
        keep = torch.arange(ids.shape[1] - 4, ids.shape[1] - 1)
        with torch.no_grad():
            return label_positions_logits(model, ids, torch.ones_like(ids), keep)

    plain = {k: logits(ids) for k, ids in (("a", a), ("b", b))}
    assert calls == [(1, 10), (3, 6), (1, 12), (3, 6)]  # outside the block every opening runs
    calls.clear()
    with openings_reused(model):
        first, again, other = logits(a), logits(a), logits(b)
    # a's opening once; then none for a again; b runs only its 5 tokens after the 7 it shares with a's opening
    assert calls == [(1, 10), (3, 6), (3, 6), (1, 5), (3, 6)]
    for got, want in ((first, plain["a"]), (again, plain["a"]), (other, plain["b"])):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    calls.clear()
    logits(a)  # the block is over: nothing kept
    assert calls == [(1, 10), (3, 6)]
    # a block for another model (a copy with the same weights) keeps nothing for this one: its openings run each time
    twin = copy.deepcopy(model)
    calls.clear()
    with openings_reused(twin):
        logits(a), logits(a)
    assert calls == [(1, 10), (3, 6), (1, 10), (3, 6)]
