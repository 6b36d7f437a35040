"""Forward passes that compute the batch's shared opening once.

Every scoring and evaluation batch is a set of prompts built from one chat template: on the bundled model the first
24–29 of about 45–55 tokens (the template's system prompt, then the common opening of the questions) are the same in
every row. :func:`label_positions_logits` runs those positions once, at batch size 1, keeps their keys and values in
the model's cache, repeats the cache for every row and runs only the rest of each row after it — exact (the rows
attend to the same keys and values); :func:`grin_ui.generation.generate_details` does the same for the prompts of a
generation batch.

    logits = label_positions_logits(model, input_ids, attention_mask, keep)  # as model(..., logits_to_keep=keep)
    lps = shared_prompt_logprobs(model, items, pad)   # answers scored after their prompt, each prompt run once

:func:`shared_prompt_logprobs` goes one step further for answers that share their whole prompt (a question's
paraphrased and perturbed answers for the truth ratio, a multiple-choice question's options): the prompts run once
(:func:`prompt_pass`, itself sharing their common opening) and each answer runs after its prompt's cache. On the
bundled model the truth ratios of the real-knowledge example (160 answers to 40 questions) took 4.2 s against 7.2 s.

Across batches, :func:`openings_reused` keeps the openings' keys and values for one model state — an evaluation, a
stop check, the fluency scoring — so that an opening already computed is not computed again and one that starts like
it runs only its own tokens (an evaluation of real-knowledge: 17 openings, 16 of them taken from the first; the
whole evaluation 18.7 s against 19.2 s, interleaved, the same answers and figures up to float rounding).

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

import contextlib
import contextvars
import copy
import functools
import inspect

import torch

from grin_ui.placement import input_device

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


MAX_KEPT = 32  # openings kept per model inside :func:`openings_reused`
_KEPT: contextvars.ContextVar[dict | None] = contextvars.ContextVar("grin_ui_openings", default=None)


@contextlib.contextmanager
def openings_reused(model):
    """Within the block, :func:`opening_cache` keeps the keys and values of the openings it computes for ``model``
    (at most :data:`MAX_KEPT`) and reuses them: an opening that starts like one already computed — on at least
    :data:`MIN_PREFIX` tokens — takes those positions from it and runs only its remaining tokens. Exact up to float
    rounding (a position's keys and values depend only on the tokens up to it). The model's weights must not change
    inside the block (an evaluation, a stop check). Per thread and context (a context variable)."""
    token = _KEPT.set({"model": model, "entries": []})
    try:
        yield
    finally:
        _KEPT.reset(token)


def _plain_layers(cache) -> list | None:
    """The (keys, values) of each layer of a cache made only of plain dynamic layers, else None."""
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer).__name__ != "DynamicLayer" or getattr(layer, "keys", None) is None
                         for layer in layers):
        return None
    return [(layer.keys, layer.values) for layer in layers]


def _reused(kept: dict, tokens: tuple, opening: torch.Tensor, model, last_only: dict):
    """The batch-1 cache of ``opening`` from the longest kept opening it starts like, or None."""
    best, n = None, 0
    for other, kv in kept["entries"]:
        c = common_start([list(tokens), list(other)])
        if c > n:
            best, n = kv, c
    if best is None or n < MIN_PREFIX:
        return None
    from transformers import DynamicCache

    cache = DynamicCache()
    for i, (k, v) in enumerate(best):
        cache.update(k[:, :, :n], v[:, :, :n], i)
    if n < len(tokens):
        p = len(tokens)
        out = model(input_ids=opening[:, n:], attention_mask=torch.ones_like(opening), use_cache=True,
                    position_ids=torch.arange(n, p, device=opening.device)[None],
                    **{cache_keyword(model): cache}, **last_only)
        cache = cache_of(out)
    return cache


def opening_cache(model, opening: torch.Tensor, rows: int):
    """The KV cache of ``opening`` ([1, p] token ids, no padding) repeated for ``rows`` rows, or None when the model
    returns no cache that can be repeated. Inside :func:`openings_reused` the openings are kept and reused."""
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in forward_params(model) else {}
    kept = _KEPT.get()
    kept = kept if kept is not None and kept["model"] is model and "position_ids" in forward_params(model) else None
    tokens = tuple(opening[0].tolist())
    cache = _reused(kept, tokens, opening, model, last_only) if kept is not None else None
    if cache is None:
        cache = cache_of(model(input_ids=opening, attention_mask=torch.ones_like(opening), use_cache=True,
                               **last_only))
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return None
    layers = _plain_layers(cache) if kept is not None else None
    if layers is not None and all(tokens != t for t, _ in kept["entries"]):
        kept["entries"] = [*kept["entries"][-(MAX_KEPT - 1):], (tokens, [(k.clone(), v.clone()) for k, v in layers])]
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


def prompt_pass(model, prompts: list[list[int]], pad: int, device, keep_last: bool = True):
    """One forward pass over token-id ``prompts`` padded on the left, the opening they all share (at least
    :data:`MIN_PREFIX` tokens) run once and its cache repeated for the rows. Returns (output, attention mask
    [rows, width] covering the cache). ``keep_last``: vocabulary logits at the last position only. Needs a model
    whose forward takes ``position_ids``; without it the rows run unshared (positions follow from the mask)."""
    takes_positions = "position_ids" in forward_params(model)
    p = min(common_start(prompts), min(len(q) for q in prompts) - 1)
    p = p if takes_positions and len(prompts) > 1 and p >= MIN_PREFIX else 0
    head = opening_cache(model, torch.tensor([prompts[0][:p]], device=device), len(prompts)) if p else None
    p = p if head is not None else 0
    width = max(len(q) for q in prompts) - p
    ids = torch.tensor([[pad] * (width - len(q) + p) + q[p:] for q in prompts], device=device)
    mask = torch.tensor([[1] * p + [0] * (width - len(q) + p) + [1] * (len(q) - p) for q in prompts], device=device)
    extra = {"position_ids": (mask.cumsum(-1) - 1).clamp(min=0)[:, p:]} if takes_positions else {}
    if head is not None:
        extra[cache_keyword(model)] = head
    if keep_last and "logits_to_keep" in forward_params(model):
        extra["logits_to_keep"] = 1
    return model(input_ids=ids, attention_mask=mask, use_cache=True, **extra), mask


def can_share_prompts(model) -> bool:
    """Whether :func:`shared_prompt_logprobs` can run on ``model`` (a cache, ``position_ids``)."""
    params = forward_params(model)
    return "position_ids" in params and ("cache" in params or "past_key_values" in params)


def _selected(cache, sel: torch.Tensor, last: bool):
    """The rows ``sel`` of ``cache``: the cache itself when ``last`` (no later use), else a shallow copy whose layers
    take new tensors (the cache is left as it was)."""
    if not last:
        cache = copy.copy(cache)
        cache.layers = [copy.copy(layer) for layer in cache.layers]
    cache.batch_select_indices(sel)
    return cache


@torch.inference_mode()
def shared_prompt_logprobs(model, items, pad: int, max_rows: int = 32, max_prompts: int = 32) -> list[torch.Tensor]:
    """The log-prob of every label token of Q/A ``items`` (grin_ui.data.EncodedExample: labels only after
    ``prompt_len``), float32 1-D per item in input order — what ``grin_ui.evaluate.score_items`` gives — with each
    distinct prompt run once: up to ``max_prompts`` distinct prompts (a question's paraphrased and perturbed answers
    share one) run in one prompt pass (:func:`prompt_pass`); their answers, sorted by length so that little is
    padding, then run in passes of at most ``max_rows`` rows, each row after its prompt's cache. Exact up to float
    rounding. See :func:`can_share_prompts`."""
    device = input_device(model)
    groups: dict[tuple, list[int]] = {}
    for i, it in enumerate(items):
        if any(t != -100 for t in it.labels[: it.prompt_len]):
            raise ValueError("shared_prompt_logprobs scores answers only: the prompt must carry no labels.")
        groups.setdefault(tuple(it.input_ids[: it.prompt_len]), []).append(i)
    keys = sorted(groups, key=len)
    out: list[torch.Tensor | None] = [None] * len(items)
    for start in range(0, len(keys), max_prompts):
        batch = keys[start : start + max_prompts]
        first, prompt_mask = prompt_pass(model, [list(k) for k in batch], pad, device)
        rows = sorted(((g, i) for g, k in enumerate(batch) for i in groups[k]),
                      key=lambda gi: len(items[gi[1]].input_ids) - items[gi[1]].prompt_len)
        for at in range(0, len(rows), max_rows):
            part = rows[at : at + max_rows]
            sel = torch.tensor([g for g, _ in part], device=device)
            idx = [i for _, i in part]
            past = _selected(cache_of(first), sel, last=at + max_rows >= len(rows))
            answers = [items[i].input_ids[items[i].prompt_len:] for i in idx]
            width = max(len(a) for a in answers)
            ids = torch.tensor([a + [pad] * (width - len(a)) for a in answers], device=device)
            lens = torch.tensor([len(a) for a in answers], device=device)
            mask = torch.cat([prompt_mask[sel], (torch.arange(width, device=device) < lens[:, None]).long()], dim=-1)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, -width:]
            rest = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                         **{cache_keyword(model): past}).logits
            logits = torch.cat([first.logits[:, -1:][sel], rest[:, : width - 1]], dim=1).float()
            lp = torch.log_softmax(logits, dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
            for r, i in enumerate(idx):
                labels = torch.tensor(items[i].labels[items[i].prompt_len:], device=device)
                out[i] = lp[r, : len(labels)][labels != -100].cpu()
    return out  # type: ignore[return-value]
