"""Our greedy decoding loop (grin_ui.generation.generate_details) gives exactly the tokens of transformers'
``model.generate`` with greedy search — rows that finish early leave the batch, rows that never stop run to the
limit — on the tiny model and on a freshly initialised one that rambles."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from grin_ui.data import prompt_ids
from grin_ui import prefix
from grin_ui.generation import generate_details, stop_ids
from grin_ui.tokens import pad_id


def reference(model, tokenizer, prompts, max_new_tokens):
    """transformers' greedy generate, one prompt at a time (no padding), cut at the first stop token."""
    stops = stop_ids(model, tokenizer)
    out = []
    for p in prompts:
        ids = torch.tensor([p])
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, num_beams=1, pad_token_id=pad_id(tokenizer),
                             eos_token_id=sorted(stops), temperature=None, top_p=None, top_k=None)
        new = gen[0, len(p):].tolist()
        cut = next((k for k, t in enumerate(new) if t in stops), None)
        out.append((new if cut is None else new[:cut], cut is not None))
    return out


@pytest.mark.parametrize("share_from", [None, 2])
def test_same_tokens_as_transformers_generate(tiny_lm, tiny_sets, monkeypatch, share_from):
    """Also with the prompts' shared opening ("Question: …", a few tokens here) run once per batch."""
    if share_from:
        monkeypatch.setattr(prefix, "MIN_PREFIX", share_from)
    questions = [r.question for recs in tiny_sets.values() for r in recs]
    prompts = [prompt_ids(tiny_lm.tokenizer, q) for q in questions]
    ours = generate_details(tiny_lm.model, tiny_lm.tokenizer, prompts, max_new_tokens=24, batch_size=8)
    ref = reference(tiny_lm.model, tiny_lm.tokenizer, prompts, 24)
    assert [(g.ids, g.finished) for g in ours] == ref
    assert any(g.finished for g in ours)


@pytest.mark.parametrize("seed", [0, 1])
def test_rows_that_never_stop_and_rows_that_stop_at_once(tiny_lm, seed):
    """A random model: most rows ramble to the limit, some hit a stop token early — both as transformers does."""
    torch.manual_seed(seed)
    tok = tiny_lm.tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      eos_token_id=tok.eos_token_id, pad_token_id=pad_id(tok))
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # make the stop token likely after some prefixes
        model.lm_head.weight[tok.eos_token_id] *= 1.5
    prompts = [[(7 * i + j) % (len(tok) - 1) + 1 for j in range(3 + i % 5)] for i in range(12)]
    # and prompts that open alike, as a chat template's system prompt does: the opening runs once per batch
    opening = [(5 * j + seed) % (len(tok) - 1) + 1 for j in range(prefix.MIN_PREFIX + 3)]
    prompts += [opening + p for p in prompts]
    ours = generate_details(model, tok, prompts, max_new_tokens=16, batch_size=5)
    assert 0 < sum(g.finished for g in ours) < len(ours)  # both kinds of row in the batches
    assert [(g.ids, g.finished) for g in ours] == reference(model, tok, prompts, 16)
