"""Batched greedy generation with left padding and the KV cache.

    answers = generate(model, tokenizer, ["What is the capital of France?"], max_new_tokens=64)
"""

from __future__ import annotations

import torch

from grin_ui.data import prompt_ids


@torch.inference_mode()
def generate_ids(model, tokenizer, prompts: list[list[int]], max_new_tokens: int = 64, batch_size: int = 16) -> list[str]:
    """Greedy continuations of token-id prompts, decoded without special tokens, in input order.

    Prompts are sorted by length and padded on the left, so each batch wastes little compute; the KV cache is used.
    """
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
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
            use_cache=True,
            temperature=None,
            top_p=None,
            top_k=None,
        )
        for row, i in enumerate(idx):
            out[i] = tokenizer.decode(gen[row, width:], skip_special_tokens=True).strip()
    return out


def generate(model, tokenizer, questions: list[str], max_new_tokens: int = 64, batch_size: int = 16) -> list[str]:
    """Greedy answers to questions, each formatted with the model's chat template (or the plain Q/A format)."""
    return generate_ids(model, tokenizer, [prompt_ids(tokenizer, q) for q in questions], max_new_tokens, batch_size)
