"""Small tokenizer helpers shared by every module that pads batches.

    pad = pad_id(tokenizer)   # the tokenizer's pad id, or its end-of-sequence id when it has no pad token
"""

from __future__ import annotations


def pad_id(tokenizer) -> int:
    """Token id used to pad batches: ``pad_token_id``, falling back to ``eos_token_id`` (many causal LMs define no
    pad token; the padded positions are masked out of attention and of the loss, so the choice does not matter)."""
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is not None:
        return pad
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError("The tokenizer defines neither a pad token nor an end-of-sequence token.")
    return eos
