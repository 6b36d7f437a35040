"""Quantization probes: RTN formula, bitsandbytes equivalence, survival map, recovery, probes on the tiny model."""

import bitsandbytes as bnb
import bitsandbytes.functional as bnbf
import pytest
import torch

from grin_ui.config import EvalConfig, ProbeConfig
from grin_ui.delta import DeltaEntry, SparseDelta
from grin_ui.errors import GrinError
from grin_ui.quantize import (
    dequantize_weight,
    quantizable_linears,
    quantized,
    quantized_copy,
    recovery,
    run_probe,
    survival_map,
)

# NF4 code book (QLoRA, Dettmers et al. 2023): the 16 values a normalized weight is rounded to
NF4 = torch.tensor([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                    0.7229568362236023, 1.0])


def test_rtn_matches_the_formula_on_a_known_tensor():
    w = torch.tensor([[1.0, 0.0625, 0.1875, -0.3, -1.0, 0.5, 0.3125, 0.9, 0.5, 0.25],
                      [0.0, 0.0, 0.0, 0.0, 0.3, 0.1, -0.2, 0.05, 0.25, -0.5]])
    # groups of 4 along the input dim (the last group has 2); int4: delta = max|w| / 8, codes in [-8, 7]
    # row 0: delta 0.125 -> codes [8->7, 0.5->0 (half to even), 1.5->2, -2.4->-2 | -8, 4, 2.5->2, 7.2->7 | ...]
    #        last group [0.5, 0.25]: delta 0.0625 -> codes [8->7, 4]
    # row 1: all-zero group stays 0; [0.3, 0.1, -0.2, 0.05]: delta 0.0375 -> codes [8->7, 2.67->3, -5.33->-5, 1.33->1]
    #        last group [0.25, -0.5]: delta 0.0625 -> codes [4, -8]
    expected = torch.tensor([[0.875, 0.0, 0.25, -0.25, -1.0, 0.5, 0.25, 0.875, 0.4375, 0.25],
                             [0.0, 0.0, 0.0, 0.0, 0.2625, 0.1125, -0.1875, 0.0375, 0.25, -0.5]])
    assert torch.allclose(dequantize_weight(w, "rtn4", group_size=4), expected, atol=1e-7)
    # int8, default group 128 (wider than the row: one group per row): delta = 1/128 on row 0
    q8 = dequantize_weight(w, "rtn8")
    assert q8[0, :4].tolist() == [127 / 128, 8 / 128, 24 / 128, -38 / 128]
    assert q8[0, 4].item() == -1.0  # -128 is inside the int8 range
    assert q8.dtype == w.dtype and q8.shape == w.shape
    with pytest.raises(GrinError, match="Unknown quantization probe 'int3'"):
        dequantize_weight(w, "int3")


def test_nf4_round_trip_matches_bitsandbytes_and_the_code_book():
    torch.manual_seed(0)
    w = torch.randn(32, 64).clamp(-2.4, 2.4)
    w[:, 0] = 2.5  # each row is one 64-weight block with absmax 2.5
    ours = dequantize_weight(w, "nf4")
    q, state = bnbf.quantize_4bit(w, blocksize=64, quant_type="nf4")
    assert torch.equal(ours, bnbf.dequantize_4bit(q, state))
    # by hand: 2.5 * (nearest NF4 code to w / 2.5)
    norm = w / 2.5
    nearest = NF4[(norm.unsqueeze(-1) - NF4).abs().argmin(-1)]
    assert torch.allclose(ours, nearest * 2.5, atol=1e-6)
    # fp4 is a different grid
    assert not torch.equal(dequantize_weight(w, "fp4"), ours)


@pytest.mark.parametrize("kind", ["nf4", "fp4"])
def test_dequantized_weights_give_the_output_of_bitsandbytes_linear4bit(kind):
    torch.manual_seed(1)
    w, x = torch.randn(48, 64), torch.randn(3, 5, 64)
    layer = bnb.nn.Linear4bit(64, 48, bias=False, compute_dtype=torch.float32, quant_type=kind,
                              compress_statistics=False)
    layer.weight = bnb.nn.Params4bit(w.clone(), requires_grad=False, quant_type=kind, compress_statistics=False,
                                     blocksize=64)
    layer = layer.to("cpu")  # quantizes; training mode keeps bitsandbytes' reference (dequantize + matmul) path
    with torch.no_grad():
        assert torch.equal(layer(x), torch.nn.functional.linear(x, dequantize_weight(w, kind)))


def test_int8_copy_uses_real_llm_int8_modules(tiny_lm):
    model = tiny_lm.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.tensor([tiny_lm.tokenizer("Question: Where was Velmora Quist born?\nAnswer:")["input_ids"]])
    with quantized(model, "int8") as q:
        int8 = [m for _, m in quantizable_linears(q)]
        assert len(int8) == 14 and all(type(m) is bnb.nn.Linear8bitLt for m in int8)  # 2 blocks x 7 LLM.int8
        assert type(q.lm_head) is torch.nn.Linear
        assert int8[0].weight.dtype == torch.int8 and int8[0].state.threshold == 6.0
        w = model.model.layers[0].self_attn.q_proj.weight
        stored = int8[0].weight.data.float() * int8[0].weight.SCB.float().unsqueeze(1) / 127
        assert torch.allclose(stored, dequantize_weight(w, "int8"), atol=1e-7)
        assert torch.equal(q.model.embed_tokens.weight, model.model.embed_tokens.weight)  # embeddings full precision
        with torch.no_grad():
            a, b = model(input_ids=ids).logits, q(input_ids=ids).logits
        assert (a - b).abs().max() < 0.1 * a.abs().max()  # close, not equal
        assert not torch.equal(a, b)
    assert sum(p.numel() for p in q.parameters()) == 0  # the copy's memory was released on exit
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the original is untouched


def test_quantized_copy_from_the_in_memory_state(tiny_lm):
    model = tiny_lm.model
    name = "model.layers.1.mlp.up_proj.weight"
    p = dict(model.named_parameters())[name]
    delta = SparseDelta({name: DeltaEntry(None, p.detach().clone(), p.detach().clone() * 3)})
    with quantized(model, "rtn4", delta=delta) as q:
        got = dict(q.named_parameters())[name]
        assert torch.equal(got, dequantize_weight(p.detach() * 3, "rtn4"))
        assert torch.equal(q.lm_head.weight, model.lm_head.weight)
    assert torch.equal(p, delta.entries[name].old)  # the delta was undone right after copying
    q4 = quantized_copy(model, "nf4")
    assert torch.equal(dict(q4.named_parameters())[name], dequantize_weight(p.detach(), "nf4"))


def _constructed_delta(model) -> SparseDelta:
    """Rows with max|w| = 1 (column 0) and zeros elsewhere; changes either stay inside the zero bin or leave it.

    RTN int4 (row = one group): delta = 1/8 -> a change 0 -> 0.05 (0.4 delta) stays 0, 0 -> 0.1 (0.8 delta) becomes
    0.125. NF4 (each 64-weight block has absmax 1): the zero bin ends at (0 + 0.0796) / 2 = 0.0398, so 0.05 and 0.1
    both leave it, 0.03 does not."""
    params = dict(model.named_parameters())
    entries = {}
    with torch.no_grad():
        for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight",
                     "model.layers.1.mlp.down_proj.weight"):
            params[name].zero_()
            params[name][:, 0] = 1.0
    # q_proj [64, 64]: 10 changes 0 -> 0.05 (col 1), 30 changes 0 -> 0.1 (col 2), 5 listed but unchanged (col 3)
    q = params["model.layers.0.self_attn.q_proj.weight"]
    idx = torch.cat([torch.arange(10) * 64 + 1, torch.arange(30) * 64 + 2, torch.arange(5) * 64 + 3])
    new = torch.cat([torch.full((10,), 0.05), torch.full((30,), 0.1), torch.zeros(5)])
    entries["model.layers.0.self_attn.q_proj.weight"] = DeltaEntry(idx, q.detach().reshape(-1)[idx].clone(), new)
    # k_proj [32, 64], dense entry: 4 changes 0 -> 0.1
    k = params["model.layers.1.self_attn.k_proj.weight"].detach()
    k_new = k.clone()
    k_new[:4, 5] = 0.1
    entries["model.layers.1.self_attn.k_proj.weight"] = DeltaEntry(None, k.clone(), k_new)
    # down_proj [64, 128]: 8 changes 0 -> 0.03
    idx = torch.arange(8) * 128 + 7
    entries["model.layers.1.mlp.down_proj.weight"] = DeltaEntry(idx, torch.zeros(8), torch.full((8,), 0.03))
    # a norm weight: not quantized, so its change survives
    n = params["model.layers.0.input_layernorm.weight"]
    entries["model.layers.0.input_layernorm.weight"] = DeltaEntry(
        torch.tensor([0]), n.detach()[:1].clone(), n.detach()[:1] + 0.5)
    return SparseDelta(entries)


def test_survival_map_rtn_counts_bin_crossings_exactly(tiny_lm):
    delta = _constructed_delta(tiny_lm.model)
    s = survival_map(tiny_lm.model, delta, "rtn4")
    assert s["by_tensor"] == {
        "model.layers.0.self_attn.q_proj.weight": 0.75,  # 30 of 40 changes cross a bin
        "model.layers.1.self_attn.k_proj.weight": 1.0,
        "model.layers.1.mlp.down_proj.weight": 0.0,
        "model.layers.0.input_layernorm.weight": 1.0,
    }
    assert (s["changed"], s["survived"]) == (53, 35)
    assert s["blocks"] == [0, 1]
    assert s["modules"] == ["q_proj", "k_proj", "down_proj", "input_layernorm"]
    assert s["values"] == [[0.75, None, None, 1.0], [None, 1.0, 0.0, None]]
    assert s["unquantized"] == ["model.layers.0.input_layernorm.weight"]
    # int8 RTN: delta = 1/128, so every one of these changes crosses a bin
    assert survival_map(tiny_lm.model, delta, "rtn8")["survived"] == 53


def test_survival_map_nf4(tiny_lm):
    delta = _constructed_delta(tiny_lm.model)
    s = survival_map(tiny_lm.model, delta, "nf4")
    assert s["by_tensor"] == {
        "model.layers.0.self_attn.q_proj.weight": 1.0,  # 0.05 and 0.1 both leave NF4's zero bin
        "model.layers.1.self_attn.k_proj.weight": 1.0,
        "model.layers.1.mlp.down_proj.weight": 0.0,  # 0.03 stays in it
        "model.layers.0.input_layernorm.weight": 1.0,
    }
    assert (s["changed"], s["survived"]) == (53, 45)


def test_recovery_per_metric():
    original = {"forget": {"answer_hit_rate": 1.0, "rougeL_recall": 0.9, "answer_prob": 0.2, "truth_ratio": 0.3}}
    unlearned = {"forget": {"answer_hit_rate": 0.0, "rougeL_recall": 0.1, "answer_prob": 0.2, "truth_ratio": 0.9}}
    quant = {"forget": {"answer_hit_rate": 0.5, "rougeL_recall": 0.9, "answer_prob": 0.6, "truth_ratio": 0.6}}
    assert recovery(original, unlearned, quant) == {
        "answer_hit_rate": 50.0,
        "rougeL_recall": pytest.approx(100.0),
        "answer_prob": None,  # unlearning did not change it: undefined
        "truth_ratio": pytest.approx(50.0),  # (0.6 - 0.9) / (0.3 - 0.9)
    }
    with pytest.raises(GrinError):
        recovery(original, unlearned, {"retain": {}})


def test_run_probe_original_and_unlearned(tiny_lm, tiny_sets):
    model = tiny_lm.model
    name = "model.layers.1.mlp.down_proj.weight"
    p = dict(model.named_parameters())[name]
    delta = SparseDelta({name: DeltaEntry(None, p.detach().clone(), torch.zeros_like(p))})
    before = p.detach().clone()
    cfg = ProbeConfig(eval=EvalConfig(max_new_tokens=20))
    out = run_probe(model, tiny_lm.tokenizer, "rtn8", {"forget": tiny_sets["forget"]}, delta, cfg)
    assert torch.equal(p, before)
    assert out["kind"] == "rtn8" and out["seconds"] > 0
    assert out["original"]["forget"]["answer_hit_rate"] == 1.0  # 8-bit RTN keeps the memorized facts
    assert "utility" not in out["original"]
    # zeroing a whole MLP projection hurts the answers, and 8-bit RTN of the damaged model does not undo that
    assert out["unlearned"]["forget"]["nll"] > out["original"]["forget"]["nll"] + 0.1
