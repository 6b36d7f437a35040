"""Memory plans from configs alone (meta device): parameter counts of published Llama sizes, what fits one 80 GB GPU,
and the load guard using the plan."""

import json

import pytest
import torch
from transformers import LlamaConfig

from grin_ui.config import RunConfig
from grin_ui.errors import GrinError
from grin_ui.memplan import Shapes, plan_memory, resolve_score_dtype
from grin_ui.models import load_model

GPU_80GB = 80 * 10**9  # bytes, conservative (an "80 GB" card has 80 GiB)

# published shapes and parameter counts
LLAMA = {
    "Llama-3.2-1B": (dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                          num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, head_dim=64),
                     1_235_814_400),
    "Llama-2-7B": (dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                        num_key_value_heads=32, vocab_size=32000), 6_738_415_616),
    "Llama-3-8B": (dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                        num_key_value_heads=8, vocab_size=128256), 8_030_261_248),
    "Llama-3-70B": (dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                         num_key_value_heads=8, vocab_size=128256), 70_553_706_496),
}


@pytest.fixture(scope="module")
def shapes():
    return {name: Shapes.of(LlamaConfig(**kw)) for name, (kw, _) in LLAMA.items()}


@pytest.mark.parametrize("name", list(LLAMA))
def test_meta_parameter_count_matches_published(shapes, name):
    known = LLAMA[name][1]
    assert abs(shapes[name].parameters - known) / known < 0.01
    # scored = the block matrices: everything but the embeddings, head and norms
    kw = LLAMA[name][0]
    emb = kw["vocab_size"] * kw["hidden_size"] * (1 if kw.get("tie_word_embeddings") else 2)
    norms = kw["hidden_size"] * (2 * kw["num_hidden_layers"] + 1)
    assert shapes[name].scored == known - emb - norms


def test_7b_fits_one_80gb_gpu_for_scoring_and_unlearning_in_bf16_70b_does_not(shapes):
    p7 = plan_memory(LlamaConfig(**LLAMA["Llama-2-7B"][0]), torch.bfloat16, device="cuda:0",
                     shapes=shapes["Llama-2-7B"])
    assert p7.weights_bytes == 6_738_415_616 * 2  # 13.5 GB
    assert p7.score_dtype == torch.bfloat16  # auto: 16-bit weights on CUDA
    for action in ("load", "scoring", "unlearning", "probes"):
        assert p7.fits(action, GPU_80GB), (action, p7.need(action))
    # scoring keeps |G_f| and the retain grads besides the weights: well above the weights, below the card
    assert 2.5 * p7.weights_bytes < p7.need("scoring") < GPU_80GB
    p70 = plan_memory(LlamaConfig(**LLAMA["Llama-3-70B"][0]), torch.bfloat16, device="cuda:0",
                      shapes=shapes["Llama-3-70B"])
    assert not p70.fits("load", GPU_80GB) and not p70.fits("scoring", GPU_80GB)
    assert not p70.fits("unlearning", GPU_80GB)
    assert p70.devices_needed("scoring", GPU_80GB) >= 5
    line = p7.summary(GPU_80GB, "cuda:0")
    assert "weights 13.5 GB" in line and "you have 80.0 GB on cuda:0" in line
    # full-model AdamW (teaching) of a 7B in bf16 is the one action that does not fit: 4 x weights + activations
    assert line.endswith("will not fit: teaching")


def test_float32_scores_cost_twice_the_bf16_ones(shapes):
    cfg = LlamaConfig(**LLAMA["Llama-3.2-1B"][0])
    run32 = RunConfig()
    run32.score.score_dtype = "float32"
    p16 = plan_memory(cfg, torch.bfloat16, device="cuda", shapes=shapes["Llama-3.2-1B"])
    p32 = plan_memory(cfg, torch.bfloat16, device="cuda", run=run32, shapes=shapes["Llama-3.2-1B"])
    S = shapes["Llama-3.2-1B"].scored
    assert p32.terms["unlearning"]["scores kept"] - p16.terms["unlearning"]["scores kept"] == 2 * S * 2
    assert p32.need("scoring") > p16.need("scoring")


def test_plan_grows_with_tokens_and_teaching_holds_adam_state(shapes):
    cfg = LlamaConfig(**LLAMA["Llama-3.2-1B"][0])
    short, long = RunConfig(), RunConfig()
    short.limits.max_tokens, long.limits.max_tokens = 64, 256
    a = plan_memory(cfg, torch.float32, run=short, shapes=shapes["Llama-3.2-1B"])
    b = plan_memory(cfg, torch.float32, run=long, shapes=shapes["Llama-3.2-1B"])
    assert b.terms["teaching"]["activations"] == pytest.approx(4 * a.terms["teaching"]["activations"], rel=1e-9)
    n = shapes["Llama-3.2-1B"].parameters
    assert a.terms["teaching"]["AdamW state"] == 2 * n * 4


def test_score_dtype_resolution():
    assert resolve_score_dtype("auto", torch.bfloat16, "cuda:0") == torch.bfloat16
    assert resolve_score_dtype("auto", torch.float16, "cuda") == torch.bfloat16  # fp16 range is too small for ratios
    assert resolve_score_dtype("auto", torch.bfloat16, "cpu") == torch.float32
    assert resolve_score_dtype("auto", torch.float32, "cuda") == torch.float32
    assert resolve_score_dtype("bfloat16", torch.float32, "cpu") == torch.bfloat16
    with pytest.raises(GrinError, match="score dtype"):
        resolve_score_dtype("int8", torch.float32, "cpu")


def test_loaded_model_carries_its_plan(tiny_dir):
    lm = load_model(tiny_dir, device="cpu")
    plan = lm.extra["memory_plan"]
    assert plan.parameters == lm.summary.parameters
    assert plan.weights_bytes == lm.summary.parameters * 4
    assert plan.need("scoring") > plan.weights_bytes
    assert lm.extra["memory_available"] > 0


def test_guard_refuses_by_the_scoring_plan(tmp_path):
    # Llama-3-70B in fp32 on this CPU: refused from the config alone, the message names the action and numbers
    cfg = LlamaConfig(**LLAMA["Llama-3-70B"][0])
    cfg.save_pretrained(tmp_path)
    with pytest.raises(GrinError, match=r"70\.55 B parameters need about [\d.]+ GiB for scoring \(weights 282\.2 GB"):
        load_model(str(tmp_path), device="cpu")
    assert json.loads((tmp_path / "config.json").read_text())["hidden_size"] == 8192
