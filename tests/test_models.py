import json

import pytest
import torch
from transformers import BertConfig, LlamaConfig

from grin_ui.errors import GrinError
from grin_ui.generation import generate
from grin_ui.models import block_module, load_model, pick_device_dtype
from tests import tiny


def test_local_dir_loads_with_summary(tiny_dir):
    lm = load_model(tiny_dir)
    s = lm.summary
    assert s.architecture == "LlamaForCausalLM"
    assert s.layers == 2
    assert s.parameters == sum(p.numel() for p in lm.model.parameters())
    assert s.modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert (s.dtype, s.device, s.source) == ("float32", "cpu", "local")
    assert s.bytes >= s.parameters * 4
    assert not lm.model.training


def test_tiny_model_memorized_its_facts(tiny_lm):
    records = tiny.FORGET + tiny.RETAIN
    answers = generate(tiny_lm.model, tiny_lm.tokenizer, [r.question for r in records], max_new_tokens=16)
    assert sum(a == r.answer for a, r in zip(answers, records)) == len(records)


def test_device_dtype_defaults_and_override():
    assert pick_device_dtype("cpu") == ("cpu", torch.float32)
    assert pick_device_dtype("cuda") == ("cuda", torch.bfloat16)
    assert pick_device_dtype("cpu", "bf16") == ("cpu", torch.bfloat16)
    with pytest.raises(GrinError, match="Unknown dtype 'int3'"):
        pick_device_dtype("cpu", "int3")


def test_block_module_names():
    assert block_module("model.layers.3.self_attn.q_proj.weight") == (3, "q_proj")
    assert block_module("transformer.h.11.mlp.c_fc.weight") == (11, "c_fc")
    assert block_module("model.embed_tokens.weight") is None


def test_unknown_hub_id_names_id_and_hub():
    with pytest.raises(GrinError, match=r"'nobody-xyz/no-such-model'.*hub cannot be reached"):
        load_model("nobody-xyz/no-such-model")


def test_invalid_model_name():
    with pytest.raises(GrinError, match="neither a Hugging Face model id"):
        load_model("not a model!")


def test_missing_local_dir(tmp_path):
    with pytest.raises(GrinError, match="does not exist"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(GrinError, match="no config.json"):
        load_model(str(tmp_path))


def test_not_a_causal_lm(tmp_path):
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path
    )
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model_type"] = "vit"  # a vision encoder config: no causal LM head exists for it
    cfg.pop("architectures", None)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(GrinError, match="not a causal language model.*ViTConfig"):
        load_model(str(tmp_path))


def test_remote_code_is_never_trusted(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "my-secret-arch",
        "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                     "AutoModelForCausalLM": "modeling_evil.EvilModel"},
    }))
    (tmp_path / "configuration_evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(GrinError, match="trust_remote_code"):
        load_model(str(tmp_path))


def test_too_big_for_memory_is_refused_before_loading(tmp_path):
    # a 7B-class config with no weights on disk: the guard must refuse from the estimate alone
    LlamaConfig(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                num_key_value_heads=8, vocab_size=128256).save_pretrained(tmp_path)
    with pytest.raises(GrinError, match=r"would not fit in memory: 70\.\d+ B parameters need about .* GiB .* available"):
        load_model(str(tmp_path))


def test_public_deployment_restricts_local_paths(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GRIN_UI_PUBLIC", "1")
    monkeypatch.setenv("GRIN_UI_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GRIN_UI_MODEL_DIRS", raising=False)
    with pytest.raises(GrinError, match="outside the directories it allows models from"):
        load_model(tiny_dir)
    with pytest.raises(GrinError, match="outside the directories it allows models from"):
        load_model(str(tmp_path / "cache" / ".." / ".." / "etc"))
    monkeypatch.setenv("GRIN_UI_MODEL_DIRS", str(__import__("pathlib").Path(tiny_dir).parent))
    assert load_model(tiny_dir).summary.layers == 2


@pytest.mark.slow
def test_default_model_knows_paris(default_lm):
    assert default_lm.summary.name == "SmolLM2-135M-Instruct"
    assert default_lm.summary.layers == 30
    answer = generate(default_lm.model, default_lm.tokenizer, ["What is the capital of France?"])[0]
    assert "Paris" in answer
