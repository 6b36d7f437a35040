"""Batched greedy generation with left padding and the KV cache.

    answers = generate(model, tokenizer, ["What is the capital of France?"], max_new_tokens=64)
    gens = generate_details(model, tokenizer, [prompt_ids(tokenizer, q) for q in questions])  # + finished flags
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grin_ui import cancel
from grin_ui.data import end_of_answer_ids, prompt_ids
from grin_ui.placement import input_device
from grin_ui.prefix import cache_keyword, cache_of, forward_params, prompt_pass
from grin_ui.smallbatch import small_batch_linears
from grin_ui.tokens import pad_id


@dataclass
class Generation:
    """One greedy continuation: the decoded text (special tokens dropped), its new token ids up to (not including)
    the stop token, and whether it stopped on its own (an end-of-turn / EOS token) before ``max_new_tokens``."""

    text: str
    ids: list[int]
    finished: bool


def stop_ids(model, tokenizer) -> set[int]:
    """Token ids that end a generation: the generation config's EOS id(s), the tokenizer's EOS and the chat
    template's end-of-turn token."""
    ids: set[int] = set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    end = end_of_answer_ids(tokenizer)
    if end:
        ids.add(end[0])
    return ids


def generate_details(model, tokenizer, prompts: list[list[int]], max_new_tokens: int = 64,
                     batch_size: int = 16) -> list[Generation]:
    """Greedy continuations of token-id prompts, in input order.

    Prompts are sorted by length and padded on the left, so each batch wastes little compute. Our own decoding loop
    over the KV cache (the same tokens as ``model.generate`` with greedy search, see tests/test_generation.py): a
    row that has produced a stop token (:func:`stop_ids`) leaves the batch and its cache at once, so the rows still
    talking — a runaway answer — no longer drag the finished ones along to the token limit; the batch ends when
    every row has finished. The opening every prompt of a batch shares (the chat template's system prompt, at least
    :data:`grin_ui.prefix.MIN_PREFIX` tokens) is run once and its cache repeated for the rows. The current action's
    cancel flag is checked at every token (grin_ui.cancel). The decoding steps' linear layers take the small-batch
    form (grin_ui.smallbatch)."""
    with torch.inference_mode(), small_batch_linears(model):
        return _generate(model, tokenizer, prompts, max_new_tokens, batch_size)


def _generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int) -> list[Generation]:
    device = input_device(model)
    pad = pad_id(tokenizer)
    stops = torch.tensor(sorted(stop_ids(model, tokenizer)), dtype=torch.long, device=device)
    takes_positions = "position_ids" in forward_params(model)
    cache_kw = cache_keyword(model)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[Generation | None] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        cancel.check()
        idx = order[start : start + batch_size]
        # the opening every prompt of the batch shares (the chat template's system prompt) runs once, its cache
        # repeated for every row; each row's own tokens follow after padding (masked), at their true positions
        step_out, mask = prompt_pass(model, [prompts[i] for i in idx], pad, device)
        new: list[list[int]] = [[] for _ in idx]
        done = [False] * len(idx)
        rows = list(range(len(idx)))  # batch position -> row of this batch still generating
        for step in range(max_new_tokens):
            past = cache_of(step_out)
            nxt = step_out.logits[:, -1].argmax(-1)
            ended = torch.isin(nxt, stops)
            for r, t, e in zip(rows, nxt.tolist(), ended.tolist()):
                if e:
                    done[r] = True
                else:
                    new[r].append(t)
            if ended.all() or step == max_new_tokens - 1:
                break
            cancel.check()
            if ended.any():  # finished rows leave the batch and the cache
                keep = (~ended).nonzero().squeeze(-1)
                rows = [rows[k] for k in keep.tolist()]
                nxt, mask = nxt[keep], mask[keep]
                past.batch_select_indices(keep)
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
            extra = {"position_ids": mask.sum(-1, keepdim=True) - 1} if takes_positions else {}
            step_out = model(input_ids=nxt[:, None], attention_mask=mask, use_cache=True, **{cache_kw: past},
                             **extra)
        for r, i in enumerate(idx):
            out[i] = Generation(tokenizer.decode(new[r], skip_special_tokens=True).strip(), new[r], done[r])
    return out  # type: ignore[return-value]


def generate_ids(model, tokenizer, prompts: list[list[int]], max_new_tokens: int = 64, batch_size: int = 16) -> list[str]:
    """Greedy continuations of token-id prompts, decoded without special tokens, in input order."""
    return [g.text for g in generate_details(model, tokenizer, prompts, max_new_tokens, batch_size)]


def generate(model, tokenizer, questions: list[str], max_new_tokens: int = 64, batch_size: int = 16) -> list[str]:
    """Greedy answers to questions, each formatted with the model's chat template (or the plain Q/A format)."""
    return generate_ids(model, tokenizer, [prompt_ids(tokenizer, q) for q in questions], max_new_tokens, batch_size)
