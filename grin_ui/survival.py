"""Which unlearning changes survive quantization? A code-level survival measure (SPEC §5).

    s = survival_map(model, delta, "nf4")      # model holds the ORIGINAL weights; delta: original -> unlearned
    s["fraction"]             # share of the changed weights whose quantization code moves (survives)
    s["scale_only_fraction"]  # share whose dequantized value moves only because their block's absmax moved
    s["share"]                # <Q(θu) − Q(θo), θu − θo> / ‖θu − θo‖² over all changed tensors
    s["ratio_hist"]           # histogram of |Δw| / bin width at every changed weight

Definitions. θo, θu: a weight tensor before and after unlearning, in the quantizer's [out, in] layout; a *block* is
the set of weights that share one scale; a_o = max |θo| over the block (the *original* block scale).

* **Blocks and codes** (``code(x; a)``: the quantization code of x at scale a, in code units):
    - ``rtn4`` / ``rtn8``: groups of ``group_size`` consecutive weights along the input dimension (the whole row
      when narrower); step Δ = a / 2^(N−1); code = clamp(round(x / Δ), −2^(N−1), 2^(N−1) − 1); Q = code · Δ.
    - ``nf4`` / ``fp4``: blocks of 64 consecutive weights of the flattened tensor (bitsandbytes' layout, the last
      block shorter); code = the nearest value of bitsandbytes' code book C (``get_4bit_type``, normalized to
      [−1, 1]) to clamp(x · (1/a), −1, 1), decision boundaries at the midpoints of adjacent code values, exactly as
      bitsandbytes' ``quantize_4bit`` rounds; Q = code · a. FP4's +0 and −0 are one code.
    - ``int8`` (LLM.int8 weights): vector-wise, one block per output row; the weight is first cast to float16 as
      bitsandbytes does; code = clamp(round(x16 · 127 / a), −127, 127); Q = code · a / 127. (The outlier threshold
      of LLM.int8 concerns activation columns, not the weights, so it plays no part here.)
* **Survives**: a changed weight (θu ≠ θo) whose code at the *original* scale differs, code(θu; a_o) ≠
  code(θo; a_o); or whose new value lies beyond the original block's range (|θu| > a_o, where every code
  saturates) and whose real dequantized value differs, Q(θu) ≠ Q(θo) — that weight's own growth is what moves its
  block's scale (this also covers blocks with a_o = 0). Those are also counted in ``beyond_range``.
* **Scale only**: a changed weight that does not survive, yet Q(θu) ≠ Q(θo) because its block's absmax moved (its
  code did not). Never counted as survival. ``bystanders``: weights the delta did *not* change whose dequantized
  value moved all the same (same cause).
* Q(θu) and Q(θo) are the *real* quantizers, each block at its own scale (what a quantized model holds):
  :func:`grin_ui.quantize.dequantize_weight`.
* **Share of the update that survives**: ⟨Q(θu) − Q(θo), θu − θo⟩ / ‖θu − θo‖² (float64 sums over the entries of
  the tensors in a cell; per cell, per tensor, overall). It is the least-squares coefficient of the quantized change
  along the update. Beware: for a dense update much smaller than the bins, rounding acts like dithering and this
  coefficient stays near 1 *on average* although only a few entries jump a whole bin; ``cosine`` (the same inner
  product over ‖ΔQ‖·‖Δθ‖) then is small, showing that the quantized change is mostly noise.
* **Bin width** at a changed weight, in weight units, from its original value: RTN Δ = a_o / 2^(N−1); int8
  a_o / 127; NF4 / FP4 (c_{k+1} − c_{k−1}) / 2 · a_o for the code c_k of θo (the width of c_k's rounding interval;
  one-sided c_k − c_{k∓1} at the ends ±1). The ratio |θu − θo| / bin width is histogrammed on log-spaced bins
  (1/8 decade, 1e-6 … 1e3; ``below`` / ``above`` for the rest, ``above`` includes zero-width bins). A weight whose
  change is under half a bin usually keeps its code (a change of r bins moves the code of a weight placed at random
  in its bin with probability ≈ min(1, r)). Medians of the ratio, |Δw| and the bin width are read off log
  histograms (to within 1/8 decade for the ratio, 1/16 decade for the others).

Tensors the probe does not quantize (norms, embeddings, biases, LM head) keep every change: they count as surviving
with share 1 and are listed in ``unquantized``; they are not in the histogram. Memory: one changed tensor at a time
(a few float32/float64 copies of it).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from grin_ui.delta import SparseDelta
from grin_ui.errors import GrinError
from grin_ui.models import block_module
from grin_ui.quantize import (BNB_BLOCKSIZE, _check_kind, _out_in, dequantize_units, quant_units,
                              quantizable_linears, touched_units)

RATIO_LOG10_RANGE = (-6.0, 3.0)
RATIO_BINS_PER_DECADE = 8
VALUE_LOG10_RANGE = (-12.0, 2.0)


# ---------------------------------------------------------------------------------------------- code books


@lru_cache(maxsize=8)
def _bnb_code_cpu(kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(distinct sorted code values C [k], midpoints between neighbours [k−1], rounding-interval widths [k]) of
    bitsandbytes' 4-bit code book ``kind``, float32 on the CPU."""
    import bitsandbytes.functional as bnbf

    code = bnbf.get_4bit_type(kind, device="cpu").float()
    c = torch.unique(code)  # sorted; FP4's +0 / −0 become one value
    mids = (c[:-1] + c[1:]) / 2
    gaps = c[1:] - c[:-1]
    width = torch.empty_like(c)
    width[1:-1] = (gaps[:-1] + gaps[1:]) / 2
    width[0], width[-1] = gaps[0], gaps[-1]
    return c, mids, width


def code_book(kind: str) -> list[float]:
    """The distinct values of bitsandbytes' ``nf4`` / ``fp4`` code book, sorted, normalized to [−1, 1]."""
    return _bnb_code_cpu(kind)[0].tolist()


# ---------------------------------------------------------------------------------------------- blocks


def _blocks(w: torch.Tensor, kind: str, group_size: int) -> torch.Tensor:
    """Reshape a float [out, in] tensor into [n_blocks, block] (zero padding; zeros do not change an absmax)."""
    if kind in ("nf4", "fp4"):
        flat = w.reshape(-1)
        pad = (-flat.numel()) % BNB_BLOCKSIZE
        return torch.nn.functional.pad(flat, (0, pad)).view(-1, BNB_BLOCKSIZE)
    if kind == "int8":
        return w.reshape(-1, w.shape[-1])
    x = w.reshape(-1, w.shape[-1])
    g = min(group_size, x.shape[-1])
    pad = (-x.shape[-1]) % g
    return torch.nn.functional.pad(x, (0, pad)).reshape(-1, g)


def _quantizer_input(w: torch.Tensor, kind: str) -> torch.Tensor:
    """The values the quantizer rounds: float32 (LLM.int8 first casts the weight to float16)."""
    return w.to(torch.float16).float() if kind == "int8" else w.float()


def _steps(kind: str) -> int:
    """Scale / step: RTN 2^(N−1), int8 127 (bitsandbytes 4-bit codes are already normalized)."""
    return 127 if kind == "int8" else 2 ** (3 if kind == "rtn4" else 7)


def _codes(x: torch.Tensor, a: torch.Tensor, kind: str, tail: torch.Tensor | None = None,
           with_width: bool = False):
    """Elementwise code of values ``x`` at block scales ``a`` (same shape; code units, float32); entries with a = 0
    get code 0. ``tail`` (bool, same shape): entries of a partial last bitsandbytes block, rounded with x / a as
    bitsandbytes does there instead of x · (1/a). With ``with_width``, also the bin width (weight units) of each
    entry's code (module docstring)."""
    pos = a > 0
    safe = torch.where(pos, a, torch.ones_like(a))
    if kind in ("nf4", "fp4"):
        c, mids, widths = (t.to(x.device) for t in _bnb_code_cpu(kind))
        scaled = x * (1.0 / safe)
        if tail is not None and bool(tail.any()):
            scaled = torch.where(tail, x / safe, scaled)
        k = torch.bucketize(scaled.clamp(-1, 1), mids)
        code, width = c[k], widths[k] * a
    else:
        steps = _steps(kind)
        lo, hi = (-127, 127) if kind == "int8" else (-steps, steps - 1)
        code = torch.round(x * (127.0 / safe) if kind == "int8" else x / (safe / steps)).clamp(lo, hi)
        width = a / steps
    code = torch.where(pos, code, torch.zeros_like(code))
    return (code, width) if with_width else code


# ---------------------------------------------------------------------------------------------- histograms


class LogHist:
    """Counts of positive values on log10-spaced bins [lo, hi] with ``per_decade`` bins per decade, plus the counts
    below and above (inf counts above)."""

    def __init__(self, lo: float, hi: float, per_decade: int):
        self.lo, self.per_decade = lo, per_decade
        n = int(round((hi - lo) * per_decade))
        self.edges = lo + torch.arange(n + 1, dtype=torch.float64) / per_decade
        self.counts = torch.zeros(n, dtype=torch.int64)
        self.below = self.above = 0

    def add(self, values: torch.Tensor) -> None:
        """Bin index ⌊(log10 v − lo) · per_decade⌋ (float64); v = hi falls into the last bin."""
        pos = (torch.log10(values.detach().double()) - self.lo) * self.per_decade
        n = len(self.counts)
        self.below += int((pos < 0).sum())
        self.above += int((pos > n).sum())
        idx = pos[(pos >= 0) & (pos <= n)].floor().long().clamp_(max=n - 1)
        self.counts += torch.bincount(idx, minlength=n).cpu()

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.below + self.above

    def median(self) -> float | None:
        """Median, interpolated geometrically inside its bin; None when empty or when it lies outside the range."""
        n = self.total
        target = n / 2
        if n == 0 or target <= self.below or target > n - self.above:
            return None
        acc = self.below
        edges = self.edges.tolist()
        for i, c in enumerate(self.counts.tolist()):
            if c and acc + c >= target:
                return 10 ** (edges[i] + (target - acc) / c * (edges[i + 1] - edges[i]))
            acc += c
        return None


# ---------------------------------------------------------------------------------------------- one tensor


def tensor_survival(old: torch.Tensor, new: torch.Tensor, changed: torch.Tensor, kind: str, group_size: int = 128,
                    ratio_hist: LogHist | None = None, delta_hist: LogHist | None = None,
                    width_hist: LogHist | None = None, quantized_change: tuple | None = None) -> dict:
    """Survival counts for one [out, in] weight (see the module docstring). ``old``/``new``: the full tensor before
    and after; ``changed``: bool, same shape, the entries the delta changed. Histograms, when given, receive the
    |Δw| / bin width, |Δw| and bin width of the changed entries. Codes are computed at the changed entries only;
    the real quantizer runs only on the blocks that hold a changed entry (Q of the others does not move), or not at
    all when ``quantized_change`` = (units, Q(new) − Q(old) over them) is given (grin_ui.quantize.iter_requantize).

    Returns {"changed", "survived", "scale_only", "beyond_range", "bystanders", "at_least_half" (changed entries with
    |Δw| / bin width ≥ 0.5), "num", "den", "dq2"} — num = ⟨ΔQ, Δθ⟩, den = ‖Δθ‖², dq2 = ‖ΔQ‖² (float64 sums over
    the tensor), ΔQ = Q(new) − Q(old) with each block at its own scale."""
    _check_kind(kind)
    if quantized_change is None:
        units = touched_units(changed, kind)
        change = (dequantize_units(new, kind, group_size, units).double()
                  - dequantize_units(old, kind, group_size, units).double())
    else:
        units, change = quantized_change
    d_q = torch.zeros(quant_units(old, kind).shape, dtype=torch.float64, device=old.device)
    d_q[units] = change.to(d_q.device)
    d_q = d_q.reshape(old.shape)
    d_theta = new.double() - old.double()
    out = {"num": float((d_q * d_theta).sum()), "den": float((d_theta * d_theta).sum()),
           "dq2": float((d_q * d_q).sum())}
    moved = d_q != 0
    del d_q, d_theta
    out["bystanders"] = int((moved & ~changed).sum())
    xo = _blocks(_quantizer_input(old, kind), kind, group_size)
    ch = _blocks(changed, kind, group_size)
    rows = ch.nonzero()[:, 0]  # block of every changed entry, in the order of xo[ch]
    a = xo.abs().amax(-1)[rows]
    tail = None
    if kind in ("nf4", "fp4") and old.numel() % BNB_BLOCKSIZE:
        tail = rows == xo.shape[0] - 1
    xo = xo[ch]
    xu = _blocks(_quantizer_input(new, kind), kind, group_size)[ch]
    mv = _blocks(moved, kind, group_size)[ch]
    code_o, width = _codes(xo, a, kind, tail, with_width=True)
    code_moved = _codes(xu, a, kind, tail) != code_o
    beyond = (xu.abs() > a) & mv
    survived = code_moved | beyond
    dw = (_blocks(new.float(), kind, group_size)[ch] - _blocks(old.float(), kind, group_size)[ch]).abs()
    ratio = dw / width
    out.update(changed=int(xo.numel()), survived=int(survived.sum()), scale_only=int((~survived & mv).sum()),
               beyond_range=int((beyond & ~code_moved).sum()), at_least_half=int((ratio >= 0.5).sum()))
    for hist, values in ((ratio_hist, ratio), (delta_hist, dw), (width_hist, width)):
        if hist is not None:
            hist.add(values)
    return out


# ---------------------------------------------------------------------------------------------- whole delta


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


@torch.no_grad()
def survival_map(model: torch.nn.Module, delta: SparseDelta, kind: str, group_size: int = 128,
                 changes=None) -> dict:
    """Code-level survival of the unlearning changes under quantizer ``kind`` (definitions: module docstring).
    ``changes``: the iterator of grin_ui.quantize.iter_requantize over the same delta, whose quantized changes are
    then used (and the quantized copy patched on the way) instead of quantizing again; it is exhausted on return.

    ``model`` must hold the original weights (entries outside the delta are read from it); ``delta`` maps the
    original to the unlearned state. Only the delta's changed entries (new ≠ old) count; tensors are processed one
    at a time. Returns plain JSON:
    {"kind", "group_size", "block": str (what shares a scale),
     "changed", "survived", "fraction" (survived / changed; None when nothing changed),
     "scale_only", "scale_only_fraction", "beyond_range" (survivors counted through |θu| > a_o), "bystanders",
     "share" (⟨ΔQ, Δθ⟩ / ‖Δθ‖²), "cosine" (⟨ΔQ, Δθ⟩ / (‖ΔQ‖·‖Δθ‖)),
     "blocks": [int], "modules": [str], "values": [[survived / changed or None]] (blocks × modules),
     "scale_only_values", "share_values", "cosine_values": same grid,
     "ratio_hist": {"log10_edges": [..], "counts": [..], "below", "above", "n" (changed quantized weights),
                    "at_least_half" (exact count with ratio ≥ 0.5), "share_at_least_half", "median_ratio",
                    "median_abs_delta", "median_bin_width"},
     "by_tensor": {name: {"changed", "survived", "scale_only", "fraction", "share"}}, "unquantized": [names]}."""
    _check_kind(kind)
    params = dict(model.named_parameters())
    linears = {f"{name}.weight": mod for name, mod in quantizable_linears(model)}
    ratio_hist = LogHist(*RATIO_LOG10_RANGE, RATIO_BINS_PER_DECADE)
    delta_hist, width_hist = LogHist(*VALUE_LOG10_RANGE, 16), LogHist(*VALUE_LOG10_RANGE, 16)
    keys = ("changed", "survived", "scale_only", "beyond_range", "bystanders", "at_least_half", "num", "den", "dq2")
    total = dict.fromkeys(keys, 0)
    cells: dict[tuple[int, str], dict] = {}
    by_tensor: dict[str, dict] = {}
    unquantized: list[str] = []
    for name, e in delta.entries.items():
        if name not in params:
            raise GrinError(f"The delta changes '{name}', which this model does not have.")
        p = params[name].detach()
        moved = (e.new != e.old).to(p.device)
        if not bool(moved.any()):
            continue
        if name in linears:
            old, new, changed = p.clone(), p.clone(), e.changed_mask(p.shape, p.device)
            if e.idx is None:
                old.copy_(e.old)
                new.copy_(e.new)
            else:
                idx = e.idx.to(p.device)
                old.view(-1).index_copy_(0, idx, e.old.to(p.device, p.dtype))
                new.view(-1).index_copy_(0, idx, e.new.to(p.device, p.dtype))
            mod = linears[name]
            qc = None
            if changes is not None:
                got, units, change = next(changes)
                if got != name:
                    raise GrinError(f"The quantized changes are for '{got}', not '{name}'.")
                qc = (units, change)
            s = tensor_survival(_out_in(mod, old), _out_in(mod, new), _out_in(mod, changed), kind, group_size,
                                ratio_hist, delta_hist, width_hist, qc)
            del old, new, changed
        else:
            unquantized.append(name)
            n = int(moved.sum())
            d = (e.new.double() - e.old.double())[moved.to(e.new.device)]
            sq = float((d * d).sum())
            s = dict(changed=n, survived=n, scale_only=0, beyond_range=0, bystanders=0, at_least_half=0, num=sq,
                     den=sq, dq2=sq)
        by_tensor[name] = {k: s[k] for k in ("changed", "survived", "scale_only")}
        by_tensor[name].update(fraction=s["survived"] / s["changed"], share=_ratio(s["num"], s["den"]))
        for k in keys:
            total[k] += s[k]
        bm = block_module(name)
        if bm:
            cell = cells.setdefault(bm, dict.fromkeys(keys, 0))
            for k in keys:
                cell[k] += s[k]
    if changes is not None and next(changes, None) is not None:  # runs what follows the last quantized tensor
        raise GrinError("The quantized changes cover tensors the delta does not change.")
    blocks = sorted({b for b, _ in cells})
    modules: list[str] = []
    for pname in params:  # model order: q, k, v, o, gate, up, down, ...
        bm = block_module(pname)
        if bm and any(m == bm[1] for _, m in cells) and bm[1] not in modules:
            modules.append(bm[1])

    def grid(fn):
        return [[fn(cells[(b, m)]) if (b, m) in cells else None for m in modules] for b in blocks]

    n = total["changed"]
    n_hist, half = ratio_hist.total, total["at_least_half"]
    return {
        "kind": kind,
        "group_size": group_size,
        "block": _block_text(kind, group_size),
        "changed": n,
        "survived": total["survived"],
        "fraction": total["survived"] / n if n else None,
        "scale_only": total["scale_only"],
        "scale_only_fraction": total["scale_only"] / n if n else None,
        "beyond_range": total["beyond_range"],
        "bystanders": total["bystanders"],
        "share": _ratio(total["num"], total["den"]),
        "cosine": _ratio(total["num"], math.sqrt(total["den"] * total["dq2"])),
        "blocks": blocks,
        "modules": modules,
        "values": grid(lambda c: c["survived"] / c["changed"]),
        "scale_only_values": grid(lambda c: c["scale_only"] / c["changed"]),
        "share_values": grid(lambda c: _ratio(c["num"], c["den"])),
        "cosine_values": grid(lambda c: _ratio(c["num"], math.sqrt(c["den"] * c["dq2"]))),
        "ratio_hist": {
            "log10_edges": ratio_hist.edges.tolist(),
            "counts": ratio_hist.counts.tolist(),
            "below": ratio_hist.below,
            "above": ratio_hist.above,
            "n": n_hist,
            "at_least_half": half,
            "share_at_least_half": half / n_hist if n_hist else None,
            "median_ratio": ratio_hist.median(),
            "median_abs_delta": delta_hist.median(),
            "median_bin_width": width_hist.median(),
        },
        "by_tensor": by_tensor,
        "unquantized": unquantized,
    }


def _block_text(kind: str, group_size: int) -> str:
    if kind in ("nf4", "fp4"):
        return f"{BNB_BLOCKSIZE} consecutive weights, absmax scale"
    if kind == "int8":
        return "one output row (float16 weight), absmax scale"
    return f"{group_size} weights along the input dimension, absmax scale"
