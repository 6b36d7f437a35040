"""Several devices: a model dispatched with accelerate over a device_map (hooks between its parts) scores, unlearns
and evaluates exactly like the same model in one piece; device maps planned from a config alone keep decoder layers
whole; no library code assumes one model device."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import torch
from transformers import LlamaConfig

from grin_ui.config import MaskConfig, ScoreConfig, UnlearnConfig
from grin_ui.evaluate import evaluate_sets
from grin_ui.influence import compute_scores, scored_parameters
from grin_ui.mask import build_mask
from grin_ui.memplan import meta_model
from grin_ui.placement import auto_device_map, devices, input_device, is_spread, spread
from grin_ui.train import unlearn

LIB = Path(__file__).resolve().parent.parent / "grin_ui"


def _layer_map(model) -> dict:
    """Every decoder layer its own device-map entry (all "cpu": the only device here), embeddings and head apart."""
    n = model.config.num_hidden_layers
    dm = {"model.embed_tokens": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    dm.update({f"model.layers.{i}": "cpu" for i in range(n)})
    return dm


def test_dispatched_model_scores_unlearns_and_evaluates_like_one_piece(tiny_lm, tiny_sets):
    whole = tiny_lm.model
    parts = spread(copy.deepcopy(whole), device_map=_layer_map(whole), force_hooks=True)
    assert is_spread(parts) and hasattr(parts.model.layers[0], "_hf_hook")  # accelerate moves inputs per layer
    assert input_device(parts) == parts.get_input_embeddings().weight.device
    assert devices(parts) == {"cpu"}  # nothing offloaded to meta: the weights are really there
    tok = tiny_lm.tokenizer
    f, r = tiny_sets["forget"], tiny_sets["retain"]
    s1 = compute_scores(whole, tok, f, r, ScoreConfig())
    s2 = compute_scores(parts, tok, f, r, ScoreConfig())
    assert s1.scores.keys() == s2.scores.keys()
    for name in s1.scores:
        assert torch.equal(s1.scores[name], s2.scores[name]), name
        assert s2.scores[name].device == dict(parts.named_parameters())[name].device
    cfg = UnlearnConfig(steps=3, stop_when_forgotten=False)
    results = []
    for m, s in ((whole, s1), (parts, s2)):
        mask = build_mask(scored_parameters(m), s, MaskConfig("grin", 0.05, "global"))
        results.append(unlearn(m, tok, f, r, mask, cfg, seed=0))
    d1, d2 = results[0].delta, results[1].delta
    assert d1.nnz == d2.nnz > 0 and d1.changed() == d2.changed() > 0
    for name, e in d2.entries.items():
        assert torch.equal(e.new, d1.entries[name].new)
        assert e.idx is None or e.idx.device == dict(parts.named_parameters())[name].device
    assert [h["loss"] for h in results[0].history] == [h["loss"] for h in results[1].history]
    with d1.applied(whole), d2.applied(parts):
        e1 = evaluate_sets(whole, tok, {"forget": f}, utility=False)["forget"]
        e2 = evaluate_sets(parts, tok, {"forget": f}, utility=False)["forget"]
    numbers = {k for k, v in e1.items() if isinstance(v, (int, float))}
    assert {"answer_hit_rate", "nll", "answer_prob"} <= numbers
    assert {k: e1[k] for k in numbers} == {k: e2[k] for k in numbers}
    assert [x["generation"] for x in e1["examples"]] == [x["generation"] for x in e2["examples"]]


def test_device_map_planned_from_config_keeps_layers_whole():
    # Llama-3.2-1B on the meta device, over two 1 GB "GPUs" (2.5 GB of bf16 weights) and the CPU: nothing is allocated
    cfg = LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, head_dim=64)
    model = meta_model(cfg).to(torch.bfloat16)
    dm = auto_device_map(model, {0: "1000MB", 1: "1000MB", "cpu": "10GB"})
    assert set(dm.values()) == {0, 1, "cpu"}
    layer_keys = [k for k in dm if k.startswith("model.layers.")]
    assert all(re.fullmatch(r"model\.layers\.\d+", k) for k in layer_keys)  # a decoder layer is never split
    assert devices(model) == {"meta"}


def test_library_never_assumes_a_single_model_device():
    offenders = []
    for path in LIB.rglob("*.py"):
        if path.name == "placement.py":
            continue
        text = path.read_text()
        if re.search(r"next\(\s*\w*\.?(model|m)\.parameters\(\)\s*\)\.device", text) or ".model.device" in text:
            offenders.append(path.name)
    assert offenders == []
