"""Quantization probes: RTN formula, bitsandbytes equivalence, code-level survival map and its pictures, recovery,
probes on the tiny model."""

import json
import math

import bitsandbytes as bnb
import bitsandbytes.functional as bnbf
import pytest
import torch

from grin_ui import plots
from grin_ui.config import EvalConfig, ProbeConfig
from grin_ui.delta import DeltaEntry, SparseDelta
from grin_ui.errors import GrinError
from grin_ui.quantize import (
    dequantize_weight,
    quantizable_linears,
    quantized,
    quantized_copy,
    recovery,
    requantize_changed,
    run_probe,
    survival_map,
)
from grin_ui.survival import _blocks, _codes, code_book, tensor_survival

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


def _random_sparse_delta(model, seed: int = 0) -> SparseDelta:
    """A few random changes in three linear weights (sparse and dense entries, some listed but unchanged) and in a
    norm weight."""
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    entries = {}
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"):
        w = params[name].detach()
        idx = torch.randperm(w.numel(), generator=g)[:7].sort().values
        new = w.reshape(-1)[idx] + 0.05 * torch.randn(7, generator=g)
        new[0] = w.reshape(-1)[idx[0]]  # listed, unchanged
        entries[name] = DeltaEntry(idx, w.reshape(-1)[idx].clone(), new)
    w = params["model.layers.1.self_attn.k_proj.weight"].detach()
    entries["model.layers.1.self_attn.k_proj.weight"] = DeltaEntry(None, w.clone(), w + 0.2 * (w > 0.1))
    n = params["model.layers.0.input_layernorm.weight"].detach()
    entries["model.layers.0.input_layernorm.weight"] = DeltaEntry(torch.tensor([1]), n[1:2].clone(), n[1:2] + 0.5)
    return SparseDelta(entries)


@pytest.mark.parametrize("kind", ["nf4", "fp4", "rtn4"])
def test_requantizing_the_changed_blocks_gives_the_quantized_unlearned_model(tiny_lm, kind):
    model = tiny_lm.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    delta = _random_sparse_delta(model)
    q = quantized_copy(model, kind, 16)
    requantize_changed(q, model, delta, kind, 16)
    with delta.applied(model):
        want = quantized_copy(model, kind, 16)
    for name, t in want.state_dict().items():
        assert torch.equal(q.state_dict()[name], t), name
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the model stays original
    with pytest.raises(GrinError):
        requantize_changed(q, model, delta, "int8")


@pytest.mark.parametrize("kind", ["nf4", "fp4", "rtn4", "int8"])
@pytest.mark.parametrize("width", [128, 80])
def test_survival_quantizes_only_the_changed_blocks_with_the_same_result(kind, width):
    """tensor_survival runs the quantizer on the changed blocks only; its sums equal those of the whole tensors
    (width 80: rows that are not whole 4-bit blocks, quantized as one piece)."""
    g = torch.Generator().manual_seed(1)
    old = torch.randn(48, width, generator=g) * 0.05  # RTN: rows of groups of 32
    new = old.clone()
    flat = new.view(-1)
    idx = torch.randperm(old.numel(), generator=g)[:25]
    flat[idx] += 0.03 * torch.randn(25, generator=g)
    changed = new != old
    got = tensor_survival(old, new, changed, kind, 32)
    d_q = dequantize_weight(new, kind, 32).double() - dequantize_weight(old, kind, 32).double()
    d_t = new.double() - old.double()
    assert got["num"] == pytest.approx(float((d_q * d_t).sum()), rel=1e-12, abs=1e-15)
    assert got["dq2"] == pytest.approx(float((d_q * d_q).sum()), rel=1e-12, abs=1e-15)
    assert got["bystanders"] == int(((d_q != 0) & ~changed).sum())
    assert got["changed"] == int(changed.sum())


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
    assert {n: t["fraction"] for n, t in s["by_tensor"].items()} == {
        "model.layers.0.self_attn.q_proj.weight": 0.75,  # 30 of 40 changes cross a bin
        "model.layers.1.self_attn.k_proj.weight": 1.0,
        "model.layers.1.mlp.down_proj.weight": 0.0,
        "model.layers.0.input_layernorm.weight": 1.0,
    }
    assert (s["changed"], s["survived"], s["scale_only"]) == (53, 35, 0)  # no block absmax moves here
    assert s["blocks"] == [0, 1]
    assert s["modules"] == ["q_proj", "k_proj", "down_proj", "input_layernorm"]
    assert s["values"] == [[0.75, None, None, 1.0], [None, 1.0, 0.0, None]]
    assert s["unquantized"] == ["model.layers.0.input_layernorm.weight"]
    # int8 RTN: delta = 1/128, so every one of these changes crosses a bin
    assert survival_map(tiny_lm.model, delta, "rtn8")["survived"] == 53


def test_survival_map_nf4(tiny_lm):
    delta = _constructed_delta(tiny_lm.model)
    s = survival_map(tiny_lm.model, delta, "nf4")
    assert {n: t["fraction"] for n, t in s["by_tensor"].items()} == {
        "model.layers.0.self_attn.q_proj.weight": 1.0,  # 0.05 and 0.1 both leave NF4's zero bin
        "model.layers.1.self_attn.k_proj.weight": 1.0,
        "model.layers.1.mlp.down_proj.weight": 0.0,  # 0.03 stays in it
        "model.layers.0.input_layernorm.weight": 1.0,
    }
    assert (s["changed"], s["survived"]) == (53, 45)


def _moving_absmax_delta(model) -> tuple[SparseDelta, str]:
    """q_proj of block 0 ([64, 64]; one RTN group and one NF4 block per row): column 0 holds 1.0 (each row's absmax)
    and row 0 also holds 0.25, 0.5, -0.375, 0.125 in columns 1, 2, 4, 5. The delta changes six entries; the first
    grows row 0's absmax from 1.0 to 1.5, so *every* weight of row 0 gets a new scale."""
    name = "model.layers.0.self_attn.q_proj.weight"
    p = dict(model.named_parameters())[name]
    with torch.no_grad():
        p.zero_()
        p[:, 0] = 1.0
        p[0, 1], p[0, 2], p[0, 4], p[0, 5] = 0.25, 0.5, -0.375, 0.125
    rows, cols = torch.tensor([0, 0, 0, 0, 1, 1]), torch.tensor([0, 1, 2, 3, 1, 2])
    idx = rows * 64 + cols
    new = torch.tensor([1.5, 0.28125, 0.75, 0.03, 0.1, 0.05])
    return SparseDelta({name: DeltaEntry(idx, p.detach().reshape(-1)[idx].clone(), new)}), name


def test_survival_rtn4_when_a_block_absmax_moves(tiny_lm):
    delta, name = _moving_absmax_delta(tiny_lm.model)
    s = survival_map(tiny_lm.model, delta, "rtn4")
    # original step 1/8 in both rows; row 0's step becomes 1.5/8 = 0.1875 after unlearning. Codes at the ORIGINAL
    # step, and the real Q (each row at its own step):
    #   [0,0] 1.0 -> 1.5     code 7 -> 7 (saturated), but |1.5| > absmax 1.0 and Q 0.875 -> 1.3125: survives
    #   [0,1] 0.25 -> 0.28125 code 2 -> round(2.25) = 2; Q 0.25 -> 0.1875·round(1.5) = 0.375: scale only
    #   [0,2] 0.5 -> 0.75    code 4 -> 6: survives (Q 0.5 -> 0.75)
    #   [0,3] 0 -> 0.03      code 0 -> round(0.24) = 0; Q 0 -> 0.1875·round(0.16) = 0: vanishes
    #   [1,1] 0 -> 0.1       code 0 -> round(0.8) = 1: survives (Q 0 -> 0.125)
    #   [1,2] 0 -> 0.05      code 0 -> round(0.4) = 0: vanishes
    # unchanged [0,5] 0.125: Q 0.125 -> 0.1875·round(0.667) = 0.1875 (a bystander); [0,4] -0.375 -> -0.375 (not)
    assert (s["changed"], s["survived"], s["scale_only"], s["beyond_range"], s["bystanders"]) == (6, 3, 1, 1, 1)
    assert s["fraction"] == 0.5 and s["scale_only_fraction"] == pytest.approx(1 / 6)
    assert s["values"] == [[0.5]] and s["scale_only_values"] == [[pytest.approx(1 / 6)]]
    num = 0.4375 * 0.5 + 0.125 * 0.03125 + 0.25 * 0.25 + 0.125 * 0.1  # ⟨ΔQ, Δθ⟩
    den = 0.5 ** 2 + 0.03125 ** 2 + 0.25 ** 2 + 0.03 ** 2 + 0.1 ** 2 + 0.05 ** 2
    assert s["share"] == pytest.approx(num / den, rel=1e-6) and s["share_values"] == [[pytest.approx(num / den)]]
    dq2 = 0.4375 ** 2 + 0.125 ** 2 + 0.25 ** 2 + 0.125 ** 2 + 0.0625 ** 2  # ‖ΔQ‖², the bystander [0,5] included
    assert s["cosine"] == pytest.approx(num / math.sqrt(den * dq2), rel=1e-6)
    assert s["cosine_values"] == [[pytest.approx(s["cosine"])]]
    # |Δw| / bin width (bin = 1/8): 4, 0.25, 2, 0.24, 0.8, 0.4 -> three at or above 0.5; 1/8-decade bins from 1e-6
    h = s["ratio_hist"]
    assert (h["n"], h["at_least_half"], h["share_at_least_half"], h["below"], h["above"]) == (6, 3, 0.5, 0, 0)
    expected = [0] * len(h["counts"])
    for r in (4, 0.25, 2, 0.24, 0.8, 0.4):
        expected[int((math.log10(r) + 6) * 8)] += 1
    assert h["counts"] == expected
    assert h["median_bin_width"] == pytest.approx(0.125, rel=0.16)  # to within its 1/16-decade bin
    assert s["by_tensor"] == {name: {"changed": 6, "survived": 3, "scale_only": 1, "fraction": 0.5,
                                     "share": pytest.approx(num / den, rel=1e-6)}}
    report = {k: v for k, v in s.items() if k != "by_tensor"}  # what journey.py puts into report.json
    assert json.loads(json.dumps(report))["survived"] == 3


def test_survival_nf4_when_a_block_absmax_moves(tiny_lm):
    delta, _ = _moving_absmax_delta(tiny_lm.model)
    s = survival_map(tiny_lm.model, delta, "nf4")
    # NF4 codes at the original absmax 1.0 (nearest code book value; boundaries at midpoints):
    #   [0,0] 1.0 -> 1.5: code 1 -> 1 (clamped), beyond the absmax, Q 1.0 -> 1.5: survives
    #   [0,1] 0.25 -> 0.28125: code 0.2461 -> 0.2461 (boundary 0.2920); Q at absmax 1.5: 1.5·0.1609 ≠ 0.2461: scale only
    #   [0,2] 0.5 -> 0.75: code 0.4407 -> 0.7230: survives
    #   [0,3] 0 -> 0.03: zero bin ends at 0.0398: vanishes (Q at 1.5: 0.02 -> code 0)
    #   [1,1] 0 -> 0.1 and [1,2] 0 -> 0.05: both leave the zero bin: survive
    # bystanders: [0,4] -0.375 (code -0.3949 -> -0.2844 at 1.5) and [0,5] 0.125 (0.1609 -> 0.0796 at 1.5)
    assert (s["changed"], s["survived"], s["scale_only"], s["beyond_range"], s["bystanders"]) == (6, 4, 1, 1, 2)
    # bin widths (c_{k+1} - c_{k-1}) / 2 at the original codes: 1 - 0.7230 (end), 0.0885, 0.1124, 0.0853 (zero
    # code, three times); ratios 1.81, 0.35, 2.22, 0.35, 1.17, 0.59 -> four at or above 0.5
    assert s["ratio_hist"]["at_least_half"] == 4
    nf4 = NF4.tolist()
    widths = [1 - nf4[14], (nf4[11] - nf4[9]) / 2, (nf4[13] - nf4[11]) / 2] + [(nf4[8] - nf4[6]) / 2] * 3
    ratios = [d / w for d, w in zip([0.5, 0.03125, 0.25, 0.03, 0.1, 0.05], widths)]
    assert sum(r >= 0.5 for r in ratios) == 4
    expected = [0] * len(s["ratio_hist"]["counts"])
    for r in ratios:
        expected[int((math.log10(r) + 6) * 8)] += 1
    assert s["ratio_hist"]["counts"] == expected


def test_tiny_dense_updates_vanish_and_large_sparse_ones_survive(tiny_lm):
    """The case of Zhang et al.: every weight moved by ±1e-5 (a gentle full fine-tune) moves nearly no NF4 code,
    although every block's absmax moves — the value-level comparison would call ~all of it surviving."""
    model = tiny_lm.model
    name = "model.layers.0.mlp.up_proj.weight"  # [128, 64]: 128 NF4 blocks
    w = dict(model.named_parameters())[name].detach()
    g = torch.Generator().manual_seed(0)
    sign = torch.randint(0, 2, w.shape, generator=g).float() * 2 - 1
    dense = SparseDelta({name: DeltaEntry(None, w.clone(), w + 1e-5 * sign)})
    s = survival_map(model, dense, "nf4")
    assert s["changed"] == w.numel() == 8192
    assert s["fraction"] < 0.02  # code-level survival: near 0
    assert s["scale_only_fraction"] > 0.8  # ... while most dequantized values moved with their block's absmax
    assert s["fraction"] + s["scale_only_fraction"] > 0.9  # (what comparing dequantized values reported)
    assert s["cosine"] < 0.2  # the quantized difference is mostly unrelated to the update
    assert s["ratio_hist"]["at_least_half"] == 0 and s["ratio_hist"]["median_ratio"] < 1e-2
    assert s["ratio_hist"]["median_abs_delta"] == pytest.approx(1e-5, rel=0.16)
    # a few large updates: 20 weights moved by half their block's absmax
    idx = torch.randperm(w.numel(), generator=g)[:20]
    absmax = w.reshape(-1, 64).abs().amax(1).repeat_interleave(64)
    new = w.reshape(-1)[idx] + 0.5 * absmax[idx] * sign.reshape(-1)[idx]
    sparse = SparseDelta({name: DeltaEntry(idx, w.reshape(-1)[idx].clone(), new)})
    s = survival_map(model, sparse, "nf4")
    assert (s["changed"], s["survived"], s["fraction"]) == (20, 20, 1.0)
    assert 0.8 < s["share"] < 1.2 and s["cosine"] > 0.9
    assert s["ratio_hist"]["at_least_half"] == 20


def _unpack_nibbles(packed: torch.Tensor, n: int) -> torch.Tensor:
    b = packed.reshape(-1)
    return torch.stack([b >> 4, b & 0xF], 1).reshape(-1)[:n].long()


@pytest.mark.parametrize("kind", ["nf4", "fp4"])
def test_codes_at_the_own_scale_are_bitsandbytes_codes(kind):
    # [10, 13] = 130 weights: two full 64-blocks and a tail block of 2, as bitsandbytes lays them out
    torch.manual_seed(2)
    w = torch.randn(10, 13) * 0.05
    x = _blocks(w, kind, 128)
    a = x.abs().amax(-1, keepdim=True).expand_as(x)
    tail = torch.zeros_like(x, dtype=torch.bool)
    tail[-1] = True  # the partial block: bitsandbytes divides by its absmax there
    ours = _codes(x, a, kind, tail).reshape(-1)[: w.numel()]
    q, state = bnbf.quantize_4bit(w, blocksize=64, quant_type=kind, compress_statistics=False)
    theirs = bnbf.get_4bit_type(kind, device="cpu")[_unpack_nibbles(q, w.numel())]
    assert torch.equal(ours, theirs)
    assert code_book(kind) == sorted(set(bnbf.get_4bit_type(kind, device="cpu").tolist()))
    assert len(code_book("fp4")) == 15  # FP4's +0 and -0 are one code


@pytest.mark.parametrize("kind", ["rtn4", "rtn8", "int8"])
def test_codes_times_step_are_the_dequantized_weights(kind):
    torch.manual_seed(3)
    w = torch.randn(6, 200) * 0.05  # RTN: a group of 128 and a short one of 72 per row
    x = _blocks(w.to(torch.float16).float() if kind == "int8" else w, kind, 128)
    a = x.abs().amax(-1, keepdim=True)
    steps = {"rtn4": 8, "rtn8": 128, "int8": 127}[kind]
    q = _codes(x, a, kind) * (a / steps)
    if kind != "int8":
        q = q.reshape(6, -1)[:, :200]
    assert torch.allclose(q.reshape(6, 200), dequantize_weight(w, kind), rtol=0, atol=1e-7)


def test_bin_ratio_histogram_and_survival_heatmap(tiny_lm):
    delta, _ = _moving_absmax_delta(tiny_lm.model)
    s = survival_map(tiny_lm.model, delta, "rtn4")
    fig = plots.bin_ratio_histogram(s["ratio_hist"])
    bars = fig.data[0]
    assert sum(bars.y) == 6 and list(bars.y) == s["ratio_hist"]["counts"]
    assert "50.0 % ≥ 0.5" in bars.name
    assert fig.layout.shapes[0].x0 == pytest.approx(math.log10(0.5))  # the half-bin line
    # left of the line grey (rounded away), right of it green
    colors = {c for x, c, y in zip(bars.x, bars.marker.color, bars.y) if y and x < math.log10(0.5)}
    assert colors == {"#9e9e9e"}
    both = plots.bin_ratio_histogram({"full fine-tune": s["ratio_hist"], "GRIN": s["ratio_hist"]})
    assert [t.name.split(" (")[0] for t in both.data] == ["full fine-tune", "GRIN"]
    heat = plots.survival_heatmap(s["blocks"], s["modules"], s["values"], "rtn4",
                                  scale_only=s["scale_only_values"], share=s["share_values"])
    assert heat.data[0].z[0][0] == 50.0 and heat.data[0].customdata[0][0][0] == "16.7"
    assert "code moves" in heat.layout.title.text


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


def test_probe_survival_from_the_patched_copy_equals_the_survival_map(tiny_lm, tiny_sets):
    """run_probe quantizes the original once, patches it into the unlearned copy and takes the survival map from
    the patch's quantized changes: the same map and the same evaluation as quantizing each state afresh."""
    model = tiny_lm.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    delta = _random_sparse_delta(model, seed=2)
    cfg = ProbeConfig(eval=EvalConfig(max_new_tokens=8, truth_ratio=False))
    sets = {"forget": tiny_sets["forget"]}
    got = run_probe(model, tiny_lm.tokenizer, "nf4", sets, delta, cfg, survival=True)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert got["survival_map"] == survival_map(model, delta, "nf4")
    assert got["survival_map"]["changed"] == delta.changed()
    fresh = run_probe(model, tiny_lm.tokenizer, "nf4", sets, delta, cfg, original=got["original"])
    strip = lambda ev: {k: v for k, v in ev.items() if k != "seconds"}  # noqa: E731
    assert strip(fresh["unlearned"]) == strip(got["unlearned"])
