"""Quantization recovery probes (SPEC §5): does the forgotten knowledge come back after quantization?

    with quantized(model, "nf4") as q:                 # a quantized copy of the in-memory model; freed on exit
        evaluate_sets(q, tokenizer, sets)
    probe = run_probe(model, tokenizer, "nf4", sets, delta)          # {"original", "unlearned", "seconds", ...}
    recovery(eval_original, eval_unlearned, probe["unlearned"])      # {"answer_hit_rate": 83.3, ...}
    survival_map(model, delta, "rtn4")            # which unlearning changes survive Q (grin_ui.survival)

Probe kinds:
- ``nf4`` / ``fp4``: bitsandbytes 4-bit (NormalFloat / FP4), blocks of 64 consecutive weights, fp32 absmax per block,
  no double quantization — bitsandbytes' and transformers' defaults. **FP4 is what the code of Zhang et al. (ICLR
  2025) uses**: it loads models with ``load_in_4bit`` and bitsandbytes' default 4-bit type, FP4 (block 64, no double
  quantization); NF4 (QLoRA's NormalFloat) is offered beside it. The copy holds the *dequantized* weights
  (``bitsandbytes.functional.dequantize_4bit`` of ``quantize_4bit``) in the model's dtype. This is exactly what a
  bitsandbytes ``Linear4bit`` computes on its reference path (dequantize, then matmul in the compute dtype; checked
  bit-for-bit in the tests); on CPUs with AVX512-BF16 its inference kernel would additionally do the arithmetic in
  bf16, a compute-precision effect unrelated to the weight quantization being probed. Dequantized copies also let
  the survival map use the very same weights.
- ``int8``: real bitsandbytes ``Linear8bitLt`` modules (LLM.int8: row-wise absmax int8 weights with fp16 scales,
  int8 activations, outlier threshold 6.0 — activation columns above it are computed in 16-bit). Runs on CPU and GPU.
- ``rtn4`` / ``rtn8``: per-group round-to-nearest in plain PyTorch, the model of Zhang et al. (ICLR 2025):
  Q(w) = Δ · clamp(round(w / Δ), −2^(N−1), 2^(N−1) − 1), Δ = max|w| / 2^(N−1) over each group of ``group_size``
  consecutive weights along the input dimension (a shorter last group when the width is not a multiple; the whole
  row when it is narrower than a group); round half to even (``torch.round``).

Only the Linear layers inside the transformer blocks are quantized; token embeddings, the LM head, norms and biases
stay in full precision, as bitsandbytes/transformers do by default. Note that the bundled default model's weights
come from a Q4_1 GGUF file, so they already sit on a (different) 4-bit grid.

Memory: a probe holds at most one extra model copy at a time; :func:`quantized` drops the copy's tensors on exit.
"""

from __future__ import annotations

import copy
import gc
import logging
import time
from contextlib import contextmanager
from typing import Callable, Mapping, Sequence

import torch

from grin_ui.config import PROBE_KINDS, ProbeConfig
from grin_ui.data import Record
from grin_ui.delta import SparseDelta
from grin_ui.errors import GrinError
from grin_ui.evaluate import evaluate_sets
from grin_ui.metrics import recovery_pct
from grin_ui.models import block_module

BNB_BLOCKSIZE = 64
INT8_THRESHOLD = 6.0
RECOVERY_METRICS = ("answer_hit_rate", "rougeL_recall", "answer_prob", "truth_ratio")

DESCRIPTIONS = {
    "nf4": "NF4 — bitsandbytes 4-bit NormalFloat, blocks of 64, fp32 absmax",
    "fp4": "FP4 — bitsandbytes 4-bit float (its default, used by Zhang et al.), blocks of 64, fp32 absmax",
    "int8": "LLM.int8 — bitsandbytes 8-bit, row-wise absmax, outlier threshold 6.0",
    "rtn4": "RTN int4 — round-to-nearest, absmax per group of {g} along the input dimension",
    "rtn8": "RTN int8 — round-to-nearest, absmax per group of {g} along the input dimension",
}


def _check_kind(kind: str) -> None:
    if kind not in PROBE_KINDS:
        raise GrinError(f"Unknown quantization probe '{kind}'; choose from {', '.join(PROBE_KINDS)}.")


def describe(kind: str, group_size: int = 128) -> str:
    """One line saying what the probe does (for tables and reports)."""
    _check_kind(kind)
    return DESCRIPTIONS[kind].format(g=group_size)


# ---------------------------------------------------------------------------------------------- one weight


def rtn_dequantize(w: torch.Tensor, bits: int, group_size: int = 128) -> torch.Tensor:
    """Round-to-nearest N-bit, per group along the last (input) dimension; returns Q(w), same shape and dtype.

    Q(w) = Δ · clamp(round(w / Δ), −2^(N−1), 2^(N−1) − 1) with Δ = max|w| / 2^(N−1) over the group (computed in
    fp32); an all-zero group stays zero."""
    if group_size < 1:
        raise GrinError(f"The RTN group size must be at least 1, got {group_size}.")
    shape = w.shape
    x = w.detach().float().reshape(-1, shape[-1])
    width = shape[-1]
    g = min(group_size, width)
    pad = (-width) % g
    if pad:  # zeros do not change a group's max|w|: same as a shorter last group
        x = torch.nn.functional.pad(x, (0, pad))
    x = x.reshape(x.shape[0], -1, g)
    qmax = 2 ** (bits - 1)
    step = x.abs().amax(-1, keepdim=True) / qmax
    safe = torch.where(step > 0, step, torch.ones_like(step))
    q = torch.clamp(torch.round(x / safe), -qmax, qmax - 1) * step
    return q.reshape(q.shape[0], -1)[:, :width].reshape(shape).to(w.dtype)


def bnb4_dequantize(w: torch.Tensor, kind: str) -> torch.Tensor:
    """``dequantize_4bit(quantize_4bit(w))`` with bitsandbytes (blocks of 64 over the flattened tensor, fp32
    absmax, no double quantization); same shape and dtype as ``w``."""
    import bitsandbytes.functional as bnbf

    q, state = bnbf.quantize_4bit(w.detach().contiguous(), blocksize=BNB_BLOCKSIZE, quant_type=kind,
                                  compress_statistics=False)
    return bnbf.dequantize_4bit(q, state).reshape(w.shape).to(w.dtype)


def int8_dequantize(w: torch.Tensor) -> torch.Tensor:
    """The LLM.int8 weight as ``Linear8bitLt`` stores it: row-wise absmax int8 of the fp16 weight, CB · SCB / 127."""
    import bitsandbytes.functional as bnbf

    cb, scb, _ = bnbf.int8_vectorwise_quant(w.detach().to(torch.float16).contiguous())
    return (cb.float() * (scb.float().unsqueeze(1) / 127.0)).to(w.dtype)


def dequantize_weight(w: torch.Tensor, kind: str, group_size: int = 128) -> torch.Tensor:
    """A linear weight [out, in] as the ``kind``-quantized model sees it (same shape and dtype).
    ``group_size`` applies to RTN only; bitsandbytes kinds use their own fixed layout."""
    _check_kind(kind)
    if kind in ("nf4", "fp4"):
        return bnb4_dequantize(w, kind)
    if kind == "int8":
        return int8_dequantize(w)
    return rtn_dequantize(w, 4 if kind == "rtn4" else 8, group_size)


def quant_units(w: torch.Tensor, kind: str) -> torch.Tensor:
    """A 2-D view of an [out, in] weight whose rows are quantized independently of each other: bitsandbytes 4-bit
    blocks of 64 — the whole tensor as one row unless its rows are whole blocks (bitsandbytes' CPU dequantization
    reads other widths differently) — RTN and LLM.int8 rows."""
    if kind in ("nf4", "fp4"):
        return w.reshape(-1, BNB_BLOCKSIZE) if w.shape[-1] % BNB_BLOCKSIZE == 0 else w.reshape(1, -1)
    return w.reshape(-1, w.shape[-1])


def touched_units(touched: torch.Tensor, kind: str) -> torch.Tensor:
    """Indices of the :func:`quant_units` rows of an [out, in] weight that hold a True entry of ``touched``."""
    return quant_units(touched, kind).any(1).nonzero().squeeze(1)


def dequantize_units(w: torch.Tensor, kind: str, group_size: int, rows: torch.Tensor) -> torch.Tensor:
    """Q of the :func:`quant_units` rows ``rows`` of the [out, in] weight ``w``, [len(rows), unit] — equal to the
    same rows of ``dequantize_weight(w)``, since every row is quantized on its own."""
    units = quant_units(w, kind)
    if units.shape[0] == 1:  # one piece: the whole tensor, quantized in its own shape
        return quant_units(dequantize_weight(w, kind, group_size), kind)[rows]
    part = units[rows]
    return dequantize_weight(part, kind, group_size) if part.numel() else part


# ---------------------------------------------------------------------------------------------- whole model


def _is_conv1d(module) -> bool:  # GPT-2 style Conv1D: weight [in, out]
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def quantizable_linears(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(module name, module) of every Linear (or GPT-2 Conv1D) inside the transformer blocks."""
    out = []
    for name, mod in model.named_modules():
        if (isinstance(mod, torch.nn.Linear) or _is_conv1d(mod)) and block_module(f"{name}.weight"):
            out.append((name, mod))
    return out


def _out_in(mod, w: torch.Tensor) -> torch.Tensor:
    return w.t() if _is_conv1d(mod) else w


class _DropCastNotice(logging.Filter):
    """bitsandbytes logs "inputs will be cast ... to float16" on every int8 matmul with fp32 inputs; that cast is
    part of LLM.int8 by design, so the line carries no information for a probe."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "will be cast from" not in record.getMessage()


def _quiet_int8_notice() -> None:
    log = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _DropCastNotice) for f in log.filters):
        log.addFilter(_DropCastNotice())


def _int8_module(mod) -> torch.nn.Module:
    import bitsandbytes as bnb

    _quiet_int8_notice()
    w = _out_in(mod, mod.weight.detach())
    out_f, in_f = w.shape
    new = bnb.nn.Linear8bitLt(in_f, out_f, bias=mod.bias is not None, has_fp16_weights=False,
                              threshold=INT8_THRESHOLD, device="meta")
    new.weight = bnb.nn.Int8Params(w.contiguous().cpu(), requires_grad=False, has_fp16_weights=False)
    if mod.bias is not None:
        new.bias = torch.nn.Parameter(mod.bias.detach().clone().cpu(), requires_grad=False)
    return new.to(mod.weight.device).eval()  # moving Int8Params quantizes them


@torch.no_grad()
def quantized_copy(model: torch.nn.Module, kind: str, group_size: int = 128) -> torch.nn.Module:
    """A ``kind``-quantized copy of ``model`` as it is in memory now (original, or with a delta applied by the
    caller); nothing is reloaded. The Linear layers of the transformer blocks are quantized, everything else is
    copied as is. The copy is in eval mode without gradients; the caller frees it (see :func:`quantized`)."""
    _check_kind(kind)
    q = copy.deepcopy(model)
    q.eval().requires_grad_(False)
    modules = dict(q.named_modules())
    for name, mod in quantizable_linears(q):
        if kind == "int8":
            parent, _, child = name.rpartition(".")
            setattr(modules[parent] if parent else q, child, _int8_module(mod))
        else:
            w = mod.weight
            mod.weight.copy_(_out_in(mod, dequantize_weight(_out_in(mod, w), kind, group_size)))
    return q


def requantize_changed(q: torch.nn.Module, model: torch.nn.Module, delta: SparseDelta, kind: str,
                       group_size: int = 128) -> None:
    """Turn ``q``, the ``kind``-quantized copy of ``model``'s original weights (:func:`quantized_copy`), into the
    quantized copy of the unlearned model (``delta`` applied): only the :func:`quant_units` that hold a changed
    entry are quantized again, and the changed tensors the probe leaves unquantized are copied — the same weights
    as ``quantized_copy`` of the unlearned model (tests). ``model`` holds the original weights before and after.
    Not for ``int8``, whose modules hold their own int8 state. One tensor at a time: :func:`iter_requantize`."""
    for _ in iter_requantize(q, model, delta, kind, group_size):
        pass


def iter_requantize(q: torch.nn.Module, model: torch.nn.Module, delta: SparseDelta, kind: str,
                    group_size: int = 128):
    """:func:`requantize_changed` as a generator: after writing each quantized weight the delta changes, yields
    (name, units, change) — the :func:`quant_units` rows quantized again and Q(new) − Q(old) over them (float64,
    [len(units), unit]) — so that the survival map needs no quantizer of its own (grin_ui.survival). ``model``
    holds the unlearned weights while the generator is suspended; exhaust or close it."""
    if kind == "int8":
        raise GrinError("LLM.int8 copies are rebuilt whole; requantize_changed handles the dequantized kinds.")
    qparams = dict(q.named_parameters())
    linears = {f"{name}.weight": mod for name, mod in quantizable_linears(model)}
    with delta.applied(model):  # q is a copy without gradients; model is read detached
        params = dict(model.named_parameters())
        for name, e in delta.entries.items():
            p = params[name].detach()
            if name not in linears:
                qparams[name].copy_(p)
                continue
            changed = e.changed_mask(p.shape, p.device)
            if not bool(changed.any()):
                continue
            mod = linears[name]
            units = touched_units(_out_in(mod, changed), kind)
            target = _out_in(mod, qparams[name])
            view = quant_units(target.contiguous(), kind)  # a view of target unless target is a transpose
            before = view[units].double()
            after = dequantize_units(_out_in(mod, p), kind, group_size, units).to(view.dtype)
            view[units] = after
            if view.data_ptr() != target.data_ptr():
                target.copy_(view.reshape(target.shape))
            yield name, units, after.double() - before


def release(model: torch.nn.Module) -> None:
    """Drop every parameter and buffer of ``model`` so that its memory is returned even while references to the
    module object remain; the module is unusable afterwards."""
    for mod in model.modules():
        for key in list(mod._parameters):
            mod._parameters[key] = None
        for key in list(mod._buffers):
            mod._buffers[key] = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def quantized(model: torch.nn.Module, kind: str, group_size: int = 128, delta: SparseDelta | None = None):
    """``with quantized(model, kind) as q:`` a quantized copy, freed on exit. With ``delta``, the copy is built from
    the unlearned state: the delta is applied to ``model`` only while copying, so ``model`` stays original."""
    if delta is None:
        q = quantized_copy(model, kind, group_size)
    else:
        with delta.applied(model):
            q = quantized_copy(model, kind, group_size)
    try:
        yield q
    finally:
        release(q)
        del q
        gc.collect()


# ---------------------------------------------------------------------------------------------- probes


def run_probe(
    model: torch.nn.Module,
    tokenizer,
    kind: str,
    sets: Mapping[str, Sequence[Record]],
    delta: SparseDelta | None = None,
    cfg: ProbeConfig | None = None,
    progress: Callable[[str], None] | None = None,
    original: dict | None = None,
    survival: bool = False,
) -> dict:
    """Quantize the original model (and, with ``delta``, the unlearned one) and evaluate each on ``sets``.

    ``model`` must hold the original weights. One quantized copy is alive at a time. Returns {"kind",
    "description", "original": evaluate_sets(...), "unlearned": ... (with delta), "seconds"}; utility metrics only
    when ``cfg.utility``. ``original``: the quantized original's evaluation when already known (a cache): then only
    the unlearned model is quantized and evaluated. ``survival`` (with ``delta``): also "survival_map", the full
    :func:`survival_map`. When both states are evaluated (and ``kind`` is not int8) one copy serves both: the
    original's, then patched by :func:`iter_requantize`, whose quantized changes also give the survival map."""
    cfg = cfg or ProbeConfig()
    _check_kind(kind)
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    out: dict = {"kind": kind, "description": describe(kind, cfg.group_size)}

    def evaluate(q, label):
        say(f"{kind}: evaluating the quantized {label} model")
        out[label] = evaluate_sets(q, tokenizer, sets, cfg.eval, utility=cfg.utility)

    if original is not None:
        out["original"] = original
    if original is None and delta is not None and kind != "int8":
        say(f"{kind}: quantizing the original model")
        with quantized(model, kind, cfg.group_size) as q:
            evaluate(q, "original")
            say(f"{kind}: quantizing the unlearned model (again only the blocks the unlearning changed)")
            if survival:
                changes = iter_requantize(q, model, delta, kind, cfg.group_size)
                try:
                    out["survival_map"] = survival_map(model, delta, kind, cfg.group_size, changes)
                finally:
                    changes.close()  # model holds the original weights again
            else:
                requantize_changed(q, model, delta, kind, cfg.group_size)
            evaluate(q, "unlearned")
    else:
        states = [("original", None)] if original is None else []
        for label, d in states + ([("unlearned", delta)] if delta is not None else []):
            say(f"{kind}: quantizing the {label} model")
            with quantized(model, kind, cfg.group_size, d) as q:
                evaluate(q, label)
        if survival and delta is not None:
            say(f"{kind}: survival map")
            out["survival_map"] = survival_map(model, delta, kind, cfg.group_size)
    out["seconds"] = time.perf_counter() - t0
    return out


def recovery(
    original_eval: dict, unlearned_eval: dict, quantized_unlearned_eval: dict, set_name: str = "forget"
) -> dict[str, float | None]:
    """Recovery % per forget metric: 100 · (M(Q(unlearned)) − M(unlearned)) / (M(original) − M(unlearned)), None
    where undefined (see :func:`grin_ui.metrics.recovery_pct`). Metrics: answer_hit_rate, rougeL_recall,
    answer_prob and truth_ratio (when all three evaluations have it). ``original_eval`` and ``unlearned_eval`` are
    the full-precision evaluations."""
    sets = [e.get(set_name) for e in (original_eval, unlearned_eval, quantized_unlearned_eval)]
    if any(s is None for s in sets):
        raise GrinError(f"Recovery needs the '{set_name}' set in all three evaluations.")
    o, u, q = sets
    return {m: recovery_pct(o[m], u[m], q[m]) for m in RECOVERY_METRICS if m in o and m in u and m in q}


def survival_map(model: torch.nn.Module, delta: SparseDelta, kind: str, group_size: int = 128,
                 changes=None) -> dict:
    """Code-level survival of the unlearning changes under ``kind``: see :func:`grin_ui.survival.survival_map`
    (which changed weights change their quantization code at the original block scale, which move only because a
    block scale moved, the share of the update that survives, and the |Δw| / bin-width histogram)."""
    from grin_ui.survival import survival_map as _survival_map

    return _survival_map(model, delta, kind, group_size, changes)
