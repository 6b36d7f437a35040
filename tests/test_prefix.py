"""The shared-opening forward (grin_ui.prefix): the same logits as one plain pass, over fewer tokens."""

import functools

import torch

from grin_ui.data import batches, encode
from grin_ui.prefix import label_positions_logits, shared_prefix


def _batch(lm, records):
    return next(batches(encode(records, lm.tokenizer, add_end=True).items, len(records), lm.tokenizer.pad_token_id))


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
    calls = []
    forward = type(model).forward

    @functools.wraps(forward)  # the same signature: grin_ui.prefix reads it
    def counting(self, *a, **k):
        calls.append(k["input_ids"].shape)
        return forward(self, *a, **k)

    monkeypatch.setattr(type(model), "forward", counting)
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
