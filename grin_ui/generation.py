"""Batched greedy generation with left padding and the KV cache.

    answers = generate(model, tokenizer, ["What is the capital of France?"], max_new_tokens=64)
    gens = generate_details(model, tokenizer, [prompt_ids(tokenizer, q) for q in questions])  # + finished flags
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from grin_ui import cancel

from grin_ui.data import end_of_answer_ids, prompt_ids
from grin_ui.placement import input_device
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


class _CancelCheck(StoppingCriteria):
    """Checks the current action's cancel flag at every generated token (grin_ui.cancel)."""

    def __call__(self, input_ids, scores, **kwargs):
        cancel.check()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


@torch.inference_mode()
def generate_details(model, tokenizer, prompts: list[list[int]], max_new_tokens: int = 64,
                     batch_size: int = 16) -> list[Generation]:
    """Greedy continuations of token-id prompts, in input order.

    Prompts are sorted by length and padded on the left, so each batch wastes little compute; the KV cache is used
    and a batch stops as soon as every row has produced a stop token (:func:`stop_ids`)."""
    device = input_device(model)
    pad = pad_id(tokenizer)
    stops = stop_ids(model, tokenizer)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[Generation | None] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        cancel.check()
        idx = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in idx], device=device)
        mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in idx], device=device)
        gen = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=pad,
            eos_token_id=sorted(stops) or None,
            use_cache=True,
            temperature=None,
            top_p=None,
            top_k=None,
            stopping_criteria=StoppingCriteriaList([_CancelCheck()]),
        )
        for row, i in enumerate(idx):
            new = gen[row, width:].tolist()
            cut = next((k for k, t in enumerate(new) if t in stops), None)
            kept = new if cut is None else new[:cut]
            out[i] = Generation(tokenizer.decode(kept, skip_special_tokens=True).strip(), kept, cut is not None)
    return out  # type: ignore[return-value]


def generate_ids(model, tokenizer, prompts: list[list[int]], max_new_tokens: int = 64, batch_size: int = 16) -> list[str]:
    """Greedy continuations of token-id prompts, decoded without special tokens, in input order."""
    return [g.text for g in generate_details(model, tokenizer, prompts, max_new_tokens, batch_size)]


def generate(model, tokenizer, questions: list[str], max_new_tokens: int = 64, batch_size: int = 16) -> list[str]:
    """Greedy answers to questions, each formatted with the model's chat template (or the plain Q/A format)."""
    return generate_ids(model, tokenizer, [prompt_ids(tokenizer, q) for q in questions], max_new_tokens, batch_size)
