"""Memory plan: what each action needs on the device, from the model config alone, before anything is allocated.

    plan = plan_memory(config, torch.bfloat16)          # builds the model on the meta device: no weight memory
    plan.weights_bytes, plan.need("scoring"), plan.fits("unlearning", 80 * 2**30)
    plan.summary(available_bytes, "cuda:0")              # the line the Model tab shows

The model is instantiated on the ``meta`` device (accelerate's ``init_empty_weights``): shapes without storage, so
the parameter count (tied tensors counted once) and the scored-weight count (:func:`grin_ui.influence.
scored_parameters`) are exact for any size, 135M to 70B, in a second or two.

Formula (bytes). N parameters, S scored weights (2-D block matrices), T the largest scored tensor, b the weights'
dtype size, s the score dtype size (ScoreConfig.score_dtype), k = sparsity × S masked entries, L layers, h hidden
width, kv the key/value width, I the MLP width, V the vocabulary:

    W            = N·b                                       weights
    act(tokens)  = tokens · L · (10·h + 3·kv + 4·I) · b       activations kept for the backward pass
                 + tokens · V · 4 · 3                        label-position logits: fp32 log-softmax, its grad
    scoring      = W + S·s + max(S·b + act(batch·seq), S·s) + 3·T·4
                   (|G_f| kept while the retain pass fills .grad; then scores and |G_f| side by side; one tensor's
                   binning transient)
    unlearning   = W + 2·S·s (scores kept by the session) + S (bool masks) + S·b (.grad of the trainable tensors)
                   + k·(4·3 + 8 + b + 8) (fp32 m, v, master; flat indices; delta snapshot) + act(2·batch·seq)
    evaluation   = W + act_eval (generation and log-probabilities, no backward; not in ACTIONS' summary)
    probes       = W + W (one quantized copy, dequantized in the weights' dtype) + 2·S·s + act_eval
                   act_eval = act(batch·seq) / L · 2 + tokens·V·4·2 (no backward: about two layers live)
    teaching     = W · 3 (weights, .grad, rollback copy) + 2·N·b (AdamW m, v in the weights' dtype) + act(batch·seq)
    load         = W

The activation constants count the tensors a Llama decoder layer saves for its backward pass with SDPA attention
(two RMSNorm inputs and outputs ≈ 4h, attention input/output and o_proj input ≈ 3h, rotary q and k ≈ h + kv, the
q, k, v fed to SDPA ≈ h + 2kv, gate, up, SiLU output and their product ≈ 4I), rounded up.

Measured (CPU, fp32, peak RSS growth sampled every 2 ms during the action,
one run, ``python benchmarks/scale.py``; table in the README section "Big models"). measured ÷ planned peak, with
the plan computed for the data's longest sequence: random-init 135M (SmolLM2 shape) scoring 0.91, one unlearning
step 0.86, NF4 probe 1.00; tiny test model (0.4 MB of weights) 0.71, 0.79 and 1.87 — the probe there is dominated
by ~10 MB of fixed runtime allocations that do not grow with the model.

Host memory: the score index (:class:`grin_ui.influence.ScoreIndex`) keeps up to 2 × 10 % × 8 bytes per scored
weight on the CPU (``host_bytes``), about 10 GB for a 7B model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

ACTIONS = ("load", "scoring", "unlearning", "probes", "teaching")
ACT_H, ACT_KV, ACT_I = 10, 3, 4  # elements per token per layer saved for backward (see the docstring)
LOGIT_COPIES_TRAIN, LOGIT_COPIES_EVAL = 3, 2
INDEX_HOST_BYTES = 2 * 0.10 * 8  # per scored weight: ScoreIndex cache (int32 index + fp32 value, ≤ 2 × 10 %)


def dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def resolve_score_dtype(score_dtype: str, weight_dtype: torch.dtype, device: str | torch.device) -> torch.dtype:
    """``ScoreConfig.score_dtype`` as a torch dtype: "float32", "bfloat16", or "auto" = bfloat16 when the weights
    are 16-bit on a CUDA device, else float32. (fp16 weights get bf16 scores: a ratio of gradients can exceed fp16's
    range, bf16 has float32's exponent.)"""
    from grin_ui.errors import GrinError

    if score_dtype == "float32":
        return torch.float32
    if score_dtype == "bfloat16":
        return torch.bfloat16
    if score_dtype == "auto":
        on_cuda = torch.device(device).type == "cuda"
        return torch.bfloat16 if on_cuda and weight_dtype in (torch.bfloat16, torch.float16) else torch.float32
    raise GrinError(f"Unknown score dtype '{score_dtype}': use auto, float32 or bfloat16.")


def meta_model(config) -> torch.nn.Module:
    """The causal LM of ``config`` on the meta device (no storage; shapes and tying as the real model)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights(include_buffers=True):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=False)


@dataclass
class Shapes:
    """What the plan needs from a model: counted on the meta model, widths from the config."""

    parameters: int
    scored: int
    largest_scored: int
    layers: int
    hidden: int
    kv: int
    intermediate: int
    vocab: int

    @classmethod
    def of(cls, config) -> "Shapes":
        from grin_ui.influence import scored_parameters

        model = meta_model(config)
        params = list(model.parameters())  # tied tensors appear once
        scored = [p.numel() for _, p in scored_parameters(model)]
        c = config
        emb = model.get_input_embeddings().weight
        hidden = getattr(c, "hidden_size", None) or getattr(c, "n_embd", None) or emb.shape[1]
        heads = getattr(c, "num_attention_heads", None) or getattr(c, "n_head", None) or 1
        kv_heads = getattr(c, "num_key_value_heads", None) or heads
        head_dim = getattr(c, "head_dim", None) or hidden // heads
        layers = getattr(c, "num_hidden_layers", None) or getattr(c, "n_layer", None) or 1
        inter = getattr(c, "intermediate_size", None) or getattr(c, "n_inner", None) or 4 * hidden
        vocab = getattr(c, "vocab_size", None) or emb.shape[0]
        return cls(sum(p.numel() for p in params), sum(scored), max(scored, default=0), int(layers), int(hidden),
                   int(kv_heads * head_dim), int(inter), int(vocab))


@dataclass
class MemoryPlan:
    """Bytes each action needs on the device holding the model (sum over devices when it is spread)."""

    name: str
    shapes: Shapes
    dtype: torch.dtype
    score_dtype: torch.dtype
    batch_size: int
    seq_len: int
    sparsity: float
    needs: dict[str, int] = field(default_factory=dict)
    terms: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def parameters(self) -> int:
        return self.shapes.parameters

    @property
    def weights_bytes(self) -> int:
        return self.needs["load"]

    @property
    def host_bytes(self) -> int:
        """CPU memory the score index keeps, whatever the device."""
        return int(self.shapes.scored * INDEX_HOST_BYTES)

    def need(self, action: str) -> int:
        return self.needs[action]

    def transient(self, action: str) -> int:
        """What ``action`` needs beyond the loaded weights and the scores a session keeps (both held anyway); for
        teaching everything, since it trains a copy of the model."""
        t = self.terms[action]
        if action == "teaching":
            return self.needs[action]
        return int(sum(v for k, v in t.items() if k not in ("weights", "scores kept")))

    def fits(self, action: str, available: int) -> bool:
        return self.needs[action] <= available

    def devices_needed(self, action: str, per_device: int) -> int:
        """Devices of ``per_device`` bytes for ``action`` when the model is spread evenly by layers (device_map)."""
        return max(1, math.ceil(self.needs[action] / per_device))

    def summary(self, available: int | None = None, device: str = "") -> str:
        """"this model: weights 13.5 GB; scoring needs ~45.1 GB, ...; you have 79.1 GB on cuda:0"."""
        parts = [f"this model ({self.parameters / 1e9:.2f} B parameters, {_dt(self.dtype)}): weights "
                 f"{gb(self.weights_bytes)}"]
        parts += [f"{a} needs ~{gb(self.needs[a])}" for a in ACTIONS if a != "load"]
        line = "; ".join(parts)
        if available is not None:
            line += f"; you have {gb(available)} on {device or 'this device'}"
            short = [a for a in ACTIONS if not self.fits(a, available)]
            if short:
                line += f" — will not fit: {', '.join(short)}"
        return line

    def as_rows(self) -> list[tuple[str, str]]:
        rows = [("weights", gb(self.weights_bytes)), ("score dtype", _dt(self.score_dtype))]
        rows += [(f"{a} needs", "~" + gb(self.needs[a])) for a in ACTIONS if a != "load"]
        rows.append(("score index (host)", gb(self.host_bytes)))
        return rows


def gb(n: int | float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _dt(d: torch.dtype) -> str:
    return str(d).replace("torch.", "")


def activation_bytes(sh: Shapes, tokens: int, b: int, backward: bool = True) -> int:
    per_layer = tokens * (ACT_H * sh.hidden + ACT_KV * sh.kv + ACT_I * sh.intermediate) * b
    if backward:
        return per_layer * sh.layers + tokens * sh.vocab * 4 * LOGIT_COPIES_TRAIN
    return per_layer * min(2, sh.layers) + tokens * sh.vocab * 4 * LOGIT_COPIES_EVAL


def plan_memory(config, dtype: torch.dtype = torch.float32, *, name: str = "", device: str = "cpu", run=None,
                teach_batch_size: int | None = None, shapes: Shapes | None = None) -> MemoryPlan:
    """The memory plan of the model of ``config`` in ``dtype`` on ``device`` (formula in the module docstring).

    ``run``: a :class:`grin_ui.config.RunConfig` (default: the defaults) giving the batch sizes (score, unlearn,
    eval), the sparsity, ScoreConfig.score_dtype and the token limit per example (``limits.max_tokens``, the worst
    case sequence length). Unlearning holds a forget and a retain batch at once; teaching uses TeachConfig's batch."""
    from grin_ui.config import RunConfig, TeachConfig

    run = run or RunConfig()
    sh = shapes or Shapes.of(config)
    b = dtype_bytes(dtype)
    sd = resolve_score_dtype(run.score.score_dtype, dtype, device)
    s = dtype_bytes(sd)
    S, N = sh.scored, sh.parameters
    k = int(math.ceil(run.mask.sparsity * S))
    W = N * b
    seq = run.limits.max_tokens
    teach_batch = teach_batch_size or TeachConfig().batch_size
    act = activation_bytes(sh, run.score.batch_size * seq, b)
    terms = {
        "load": {"weights": W},
        "scoring": {"weights": W, "|G_f|": S * s, "retain grads + activations": max(S * b + act, S * s),
                    "binning transient": 3 * sh.largest_scored * 4},
        "unlearning": {"weights": W, "scores kept": 2 * S * s, "masks": S, "grads": S * b,
                       "optimizer + delta": k * (12 + 8 + b + 8),
                       "activations": activation_bytes(sh, 2 * run.unlearn.batch_size * seq, b)},
        "probes": {"weights": W, "quantized copy": W, "scores kept": 2 * S * s,
                   "activations": activation_bytes(sh, run.eval.batch_size * seq, b, backward=False)},
        "teaching": {"weights": W, "grads": W, "rollback copy": W, "AdamW state": 2 * N * b,
                     "activations": activation_bytes(sh, teach_batch * seq, b)},
        "evaluation": {"weights": W, "activations": activation_bytes(sh, run.eval.batch_size * seq, b, backward=False)},
    }
    needs = {a: int(sum(t.values())) for a, t in terms.items()}
    return MemoryPlan(name or getattr(config, "_name_or_path", "") or type(config).__name__, sh, dtype, sd,
                      run.score.batch_size, seq, run.mask.sparsity, needs, terms)
