"""Forward passes that compute the batch's shared opening once.

Every scoring and evaluation batch is a set of prompts built from one chat template: on the bundled model the first
24–29 of about 45–55 tokens (the template's system prompt, then the common opening of the questions) are the same in
every row. :func:`label_positions_logits` runs those positions once, at batch size 1, keeps their keys and values in
the model's cache, repeats the cache for every row and runs only the rest of each row after it — exact (the rows
attend to the same keys and values); :func:`grin_ui.generation.generate_details` does the same for the prompts of a
generation batch.

    logits = label_positions_logits(model, input_ids, attention_mask, keep)  # as model(..., logits_to_keep=keep)

Used without gradients only (scoring, evaluation, the stopping check), when the model's forward takes a cache and
``logits_to_keep`` (transformers decoder models), the batch is right-padded with at least two rows and the shared
opening has at least :data:`MIN_PREFIX` tokens before the first position whose logits are needed; otherwise one
plain forward pass. Measured on the bundled model (2 CPU cores): greedy generation of 48 answers at the default
batch of 48, 4.2 s against 5.8 s. With gradients it did not pay: a training step was as slow as without
(1.77 s against 1.71 s) — the prefix pass at batch 1 computes a second full set of weight gradients in the backward
pass, which costs what the shared tokens save. Also the small helpers every cached forward pass here uses:
:func:`forward_params`, :func:`cache_keyword`, :func:`cache_of`.
"""

from __future__ import annotations

import functools
import inspect

import torch

MIN_PREFIX = 8  # shorter shared openings are not worth a second forward call (read at each call: a benchmark sets
# it out of reach to measure the plain passes)


@functools.cache
def _params(cls) -> frozenset:
    return frozenset(inspect.signature(cls.forward).parameters)


def forward_params(model) -> frozenset:
    """The keyword arguments of the model's forward (cached per class)."""
    return _params(type(model))


def cache_keyword(model) -> str:
    """The keyword the model's forward takes its KV cache by (transformers 5.25 renamed ``past_key_values``)."""
    return "cache" if "cache" in forward_params(model) else "past_key_values"


def cache_of(output):
    """The KV cache a forward pass returned (None when it returned none)."""
    return getattr(output, "cache", None) or getattr(output, "past_key_values", None)


def shared_prefix(input_ids: torch.Tensor, attention_mask: torch.Tensor, limit: int) -> int:
    """Number of leading positions where every row has the same token and no padding, at most ``limit``."""
    same = (input_ids == input_ids[:1]).all(0) & attention_mask.bool().all(0)
    return min(int(same.long().cumprod(0).sum()), limit)


def common_start(seqs: list[list[int]]) -> int:
    """Number of leading tokens every sequence shares."""
    n = min(map(len, seqs), default=0)
    first = seqs[0] if seqs else []
    return next((i for i in range(n) if any(q[i] != first[i] for q in seqs)), n)


def opening_cache(model, opening: torch.Tensor, rows: int):
    """The KV cache of ``opening`` ([1, p] token ids, no padding) repeated for ``rows`` rows, or None when the model
    returns no cache that can be repeated."""
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in forward_params(model) else {}
    cache = cache_of(model(input_ids=opening, attention_mask=torch.ones_like(opening), use_cache=True, **last_only))
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return None
    cache.batch_repeat_interleave(rows)
    return cache


def label_positions_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: torch.Tensor,
                           min_prefix: int | None = None) -> torch.Tensor:
    """The logits at positions ``keep`` (sorted int64 1-D), [batch, len(keep), vocab], as
    ``model(input_ids, attention_mask, logits_to_keep=keep).logits`` — the shared opening computed once when no
    gradient is being recorded (module docstring)."""
    params = forward_params(model)
    n = input_ids.shape[0]
    usable = ("logits_to_keep" in params and ("cache" in params or "past_key_values" in params) and n > 1
              and keep.numel() > 0 and not torch.is_grad_enabled())
    p = shared_prefix(input_ids, attention_mask, int(keep[0])) if usable else 0
    if p < (MIN_PREFIX if min_prefix is None else min_prefix):
        return model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep).logits
    cache = opening_cache(model, input_ids[:1, :p], n)
    if cache is None:
        return model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep).logits
    out = model(input_ids=input_ids[:, p:], attention_mask=attention_mask, use_cache=True, logits_to_keep=keep - p,
                **{cache_keyword(model): cache})
    return out.logits
