"""GRI scores (SPEC §3.1): how much more a weight matters to the data to forget than to the data to keep.

For every scored weight θ_i:

    G_f = Σ_{forget batches} ∇θ mean-NLL(batch)        G_r = Σ_{retain batches} ∇θ mean-NLL(batch)
    score_i = |G_f,i| / (|G_r,i| + ε),                  ε = eps_rel · mean(|G_r|) over all scored weights

NLL is taken on the answer tokens for question/answer records and on every token for raw text (labels from
:func:`grin_ui.data.encode`). The dashboard shows log10(score).

``ScoreConfig.statistic`` picks the gradient statistic of both sides (variants, our choice where the paper is silent):
``abs-sum`` = |Σ_batches g| above (the paper's); ``sum-abs`` = Σ_examples |g_e| (per-example gradients, so that
examples pulling a weight in opposite directions do not cancel); ``fisher`` = Σ_examples g_e² (a ratio of empirical
Fisher information). The per-example statistics cost one backward pass per example instead of per batch.

    scores = compute_scores(model, tokenizer, forget, retain, ScoreConfig())
    scores.tensor_table(); scores.block_module_matrix(); scores.log10_histogram(60)

Memory: only the scored weights require grad (everything else is frozen, so no weight gradient is computed for it).
G_f is accumulated in the parameters' ``.grad``; after the forget pass each ``.grad`` is turned into |G_f| in place
and detached from the parameter (it becomes the per-tensor buffer, no copy); the retain pass then fills fresh
``.grad`` tensors, which are turned into the score in place. Peak: weights + |G_f| + G_r of the scored tensors, plus
activations; never a flattened concatenation of all scores. ``ScoreConfig.score_dtype`` picks the dtype |G_f|, G_r
and the scores are kept in (float32, or bfloat16 for large models: half the memory; "auto" = bfloat16 for 16-bit
weights on CUDA), see :mod:`grin_ui.memplan`. Every tensor stays on its parameter's device (a spread model too).

Fast masks: after scoring, each tensor's scores are binned once by the top 16 bits of their float32 pattern
(:class:`ScoreIndex`). For non-negative floats that bit pattern is monotone in the value, so these bins (relative
width 2^-7 ≈ 0.8 %, about 0.0034 decades) let :mod:`grin_ui.mask` find any top-k threshold with one pass over the
scores and an exact refinement of a single boundary bin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from grin_ui import cancel
from grin_ui.config import STATISTICS, ScoreConfig
from grin_ui.data import Record, batches, encode
from grin_ui.errors import GrinError
from grin_ui.memplan import resolve_score_dtype
from grin_ui.models import block_module
from grin_ui.objectives import nll
from grin_ui.placement import input_device
from grin_ui.tokens import pad_id

BIN_SHIFT = 16  # bins = top 16 bits of the float32 pattern (sign, 8 exponent bits, 7 mantissa bits)
N_BINS = (0x7F800000 >> BIN_SHIFT) + 1  # bins 0 .. +inf
LOG10_FLOOR = -30.0  # log10 shown for a score of exactly 0


# ---------------------------------------------------------------------------------------------- scored weights


def scored_parameters(model: torch.nn.Module, cfg: ScoreConfig | None = None) -> list[tuple[str, torch.nn.Parameter]]:
    """The parameters GRI scores, in model order.

    Default: the 2-D weight matrices inside the transformer blocks (attention and MLP projections), recognised by
    :func:`grin_ui.models.block_module`. Opt-in through ``cfg``: the token embeddings (``include_embeddings``),
    an untied LM head (``include_lm_head``; a head tied to the embeddings is the same tensor), normalization
    weights (``include_norms``: 1-D weights) and biases (``include_biases``).
    """
    cfg = cfg or ScoreConfig()
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    emb_w = getattr(emb, "weight", None)
    head_w = getattr(head, "weight", None)
    out = []
    for name, p in model.named_parameters():
        if p is emb_w:
            keep = cfg.include_embeddings
        elif p is head_w:
            keep = cfg.include_lm_head
        elif name.endswith(".bias"):
            keep = cfg.include_biases
        elif p.dim() == 1:
            keep = cfg.include_norms
        else:
            keep = p.dim() == 2 and block_module(name) is not None
        if keep:
            out.append((name, p))
    return out


# ---------------------------------------------------------------------------------------------- binned index


def _bins(t: torch.Tensor) -> torch.Tensor:
    """Bin index of every entry of a non-negative float tensor: its float32 bit pattern >> 16 (monotone in the
    value). A bfloat16 value is the top 16 bits of its float32 pattern, so its own bits are the bin (no copy)."""
    if t.dtype == torch.bfloat16:
        return t.contiguous().view(torch.int16).to(torch.int32).view(-1)
    return (t.float().contiguous().view(torch.int32) >> BIN_SHIFT).view(-1)


def bin_lower(b: int) -> float:
    """Smallest float32 value in absolute bin ``b`` (bins from :func:`_bins`)."""
    return torch.tensor([b << BIN_SHIFT], dtype=torch.int32).view(torch.float32).item()


@dataclass
class ScoreIndex:
    """Cached statistics of one set of non-negative float32 tensors (scores or |G_f|), built once.

    hist[t, j]: entries of tensor ``names[t]`` in absolute bin ``offset + j`` (16-bit bins, ordered like the values).
    top_idx[t] / top_val[t]: the entries of tensor t in bins ≥ ``cache_bin[t]`` (relative), sorted by value
    (highest first, ties by lower flat index): flat indices (int32) and values. ``cache_bin[t]`` is chosen so that
    the cache holds at least the top ``cache_fraction`` of the tensor and every entry of the top ``cache_fraction``
    of all tensors together; a mask whose boundary bin lies in the cache is built without reading the scores again.
    Memory: ≈ 2 × cache_fraction × 8 bytes per scored weight (≈ 170 MB for the bundled model at 10 %, the largest sparsity the dashboard offers).
    Also the exact per-tensor mean of log10 (zeros counted as 10^-30) and max.
    """

    names: list[str]
    numels: list[int]
    hist: torch.Tensor  # int64 [n_tensors, n_bins]
    offset: int  # absolute bin of column 0
    mean_log10: list[float]
    max_value: list[float]
    cache_bin: list[int] = field(default_factory=list)
    top_idx: list[torch.Tensor] = field(default_factory=list, repr=False)
    top_val: list[torch.Tensor] = field(default_factory=list, repr=False)

    @classmethod
    def build(cls, tensors: dict[str, torch.Tensor], cache_fraction: float = 0.10) -> "ScoreIndex":
        names, numels, rows, means, maxes = [], [], [], [], []
        for name, t in tensors.items():
            t = t.detach()
            names.append(name)
            numels.append(t.numel())
            rows.append(torch.bincount(_bins(t).cpu(), minlength=N_BINS)[:N_BINS])
            means.append(float(torch.log10(t.float().clamp_min(10.0 ** LOG10_FLOOR)).mean(dtype=torch.float64)))
            maxes.append(float(t.max()))
        full = torch.stack(rows) if rows else torch.zeros(0, N_BINS, dtype=torch.int64)
        used = full.sum(0).nonzero()
        lo, hi = (int(used[0]), int(used[-1]) + 1) if len(used) else (0, 1)
        index = cls(names, numels, full[:, lo:hi].contiguous(), lo, means, maxes)
        if cache_fraction > 0 and names:
            g_bin = index.boundary_bin(index.hist.sum(0), math.ceil(cache_fraction * index.total))
            for t, name in enumerate(names):
                own = index.boundary_bin(index.hist[t], math.ceil(cache_fraction * numels[t]))
                b = min(g_bin, own)
                flat = tensors[name].detach().reshape(-1)
                idx = (flat >= bin_lower(lo + b)).nonzero().squeeze(1)
                val = flat[idx].float().cpu()
                order = torch.sort(val, descending=True, stable=True).indices
                index.cache_bin.append(b)
                index.top_idx.append(idx.cpu()[order].to(torch.int32))
                index.top_val.append(val[order])
        return index

    @staticmethod
    def boundary_bin(hist: torch.Tensor, k: int) -> int:
        """Relative bin holding the k-th highest entry of histogram ``hist`` (k ≥ 1)."""
        rev = hist.flip(0).cumsum(0)
        pos = int(torch.searchsorted(rev, torch.tensor(max(1, k), dtype=rev.dtype)))
        return max(0, hist.numel() - 1 - pos)

    @property
    def total(self) -> int:
        return sum(self.numels)

    def bin_log10(self, j: torch.Tensor | int) -> torch.Tensor:
        """log10 of the geometric middle of relative bin(s) ``j`` (a zero-only bin 0 maps to LOG10_FLOOR)."""
        j = torch.as_tensor(j, dtype=torch.int64) + self.offset
        lower = (j << BIN_SHIFT).to(torch.int32).view(torch.float32).double()
        upper = ((j + 1) << BIN_SHIFT).to(torch.int32).view(torch.float32).double()
        mid = torch.where(lower > 0, torch.sqrt(lower * upper), upper / 2)
        return torch.log10(mid).clamp_min(LOG10_FLOOR)

    def median_log10(self, t: int) -> float:
        """Median of log10 scores of tensor ``t`` to bin resolution (±0.0017 decades)."""
        cum = self.hist[t].cumsum(0)
        j = int(torch.searchsorted(cum, (self.numels[t] + 1) // 2))
        return float(self.bin_log10(j))


# ---------------------------------------------------------------------------------------------- scores


@dataclass
class Scores:
    """GRI scores of the scored weights and cached statistics for instant masks and plots.

    scores: name -> tensor of the weight's shape on the weight's device, |G_f| / (|G_r| + ε), in the score dtype
    (ScoreConfig.score_dtype: float32, or bfloat16 — half the memory, ranks within 2^-8 relative).
    forget_saliency: name -> |G_f| in the same dtype (the forget-only saliency baseline, SalUn/SURE-style), or None.
    Keeping it costs one more copy of the scored weights (≈ 425 MB in float32 for the bundled 135M model).
    eps: the ε used (absolute). index: binned statistics of ``scores`` (built once). Everything here is computed
    from these tensors: the model is never touched again.
    """

    scores: dict[str, torch.Tensor]
    forget_saliency: dict[str, torch.Tensor] | None = None
    eps: float = 0.0
    forget_examples: int = 0
    retain_examples: int = 0
    index: ScoreIndex | None = None
    _saliency_index: ScoreIndex | None = field(default=None, repr=False)
    _row_means: dict = field(default_factory=dict, repr=False)
    _normalized: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.index is None:
            self.index = ScoreIndex.build(self.scores)

    @property
    def total(self) -> int:
        """Number of scored weights."""
        return self.index.total

    def saliency_index(self) -> ScoreIndex:
        """Binned statistics of |G_f| (built on first use)."""
        if self.forget_saliency is None:
            raise GrinError("These scores were computed without the forget-saliency baseline; rescore with it kept.")
        if self._saliency_index is None:
            self._saliency_index = ScoreIndex.build(self.forget_saliency)
        return self._saliency_index

    def normalized(self, which: str = "grin") -> tuple[dict[str, torch.Tensor], ScoreIndex]:
        """The scores (or |G_f|) with each tensor divided by its median non-zero entry (grin_ui.mask,
        ``normalize="tensor"``) and their index; built on first use and cached (one more copy of the scores)."""
        if which not in ("grin", "forget-saliency"):
            raise GrinError(f"Unknown score kind '{which}'; use grin or forget-saliency.")
        if which not in self._normalized:
            if which != "grin" and self.forget_saliency is None:
                raise GrinError("These scores were computed without the forget-saliency baseline.")
            src = median_normalized(self.scores if which == "grin" else self.forget_saliency)
            self._normalized[which] = (src, ScoreIndex.build(src))
        return self._normalized[which]

    def row_means(self, which: str = "grin") -> dict[str, torch.Tensor]:
        """Mean score of each output row (dim 0) of every tensor: name -> float32 [rows]; a 1-D tensor's rows are
        its entries. Cached per ``which`` ("grin" or "forget-saliency")."""
        if which not in self._row_means:
            src = self.scores if which == "grin" else self.forget_saliency
            if src is None:
                raise GrinError("These scores were computed without the forget-saliency baseline.")
            self._row_means[which] = {n: (t.reshape(t.shape[0], -1).mean(1, dtype=torch.float32) if t.dim() > 1
                                          else t.float())
                                      for n, t in src.items()}
        return self._row_means[which]

    def tensor_table(self) -> list[dict]:
        """One row per scored tensor: name, block, module, numel, mean_log10, median_log10, max_log10, highest
        mean first."""
        idx = self.index
        rows = []
        for t, name in enumerate(idx.names):
            bm = block_module(name)
            mx = idx.max_value[t]
            rows.append({
                "name": name,
                "block": bm[0] if bm else None,
                "module": bm[1] if bm else name.rsplit(".", 1)[0],
                "numel": idx.numels[t],
                "mean_log10": idx.mean_log10[t],
                "median_log10": idx.median_log10(t),
                "max_log10": math.log10(mx) if mx > 0 else LOG10_FLOOR,
            })
        return sorted(rows, key=lambda r: -r["mean_log10"])

    def block_module_matrix(self, stat: str = "mean_log10") -> tuple[list[int], list[str], list[list[float | None]]]:
        """Heatmap data: (blocks, modules, values[block][module]) of ``stat`` ("mean_log10", "median_log10",
        "max_log10"); None where a block has no such module. Tensors outside the blocks are left out."""
        return block_module_grid({r["name"]: r[stat] for r in self.tensor_table()})

    def log10_histogram(self, bins: int = 60, which: str = "grin") -> tuple[list[float], list[int]]:
        """Histogram of log10(score) over all scored weights: (edges [bins+1], counts [bins]), from the cached bins
        (each fine bin is assigned by its middle; resolution 0.0034 decades). Scores of exactly 0 count at -30."""
        idx = self.index if which == "grin" else self.saliency_index()
        counts = idx.hist.sum(0)
        used = counts.nonzero().squeeze(1)
        if len(used) == 0:
            return [0.0, 1.0], [0]
        logs = idx.bin_log10(used)
        lo, hi = float(logs.min()), float(logs.max())
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
        which_bin = torch.bucketize(logs, edges[1:-1], right=True)
        out = torch.zeros(bins, dtype=torch.int64).index_add_(0, which_bin, counts[used])
        return edges.tolist(), out.tolist()


def median_normalized(src: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each tensor divided by the median of its non-zero entries (a tensor of zeros is copied as it is)."""
    out = {}
    for n, t in src.items():
        pos = t[t > 0]
        scale = float(pos.float().median()) if pos.numel() else 0.0
        out[n] = t / scale if scale > 0 else t.clone()
    return out


def block_module_grid(values: dict[str, float]) -> tuple[list[int], list[str], list[list[float | None]]]:
    """Arrange per-tensor values on a block × module grid: (blocks, modules in first-seen order, grid)."""
    cells, modules = {}, []
    for name, v in values.items():
        bm = block_module(name)
        if bm is None:
            continue
        cells[bm] = v
        if bm[1] not in modules:
            modules.append(bm[1])
    blocks = sorted({b for b, _ in cells})
    return blocks, modules, [[cells.get((b, m)) for m in modules] for b in blocks]


# ---------------------------------------------------------------------------------------------- computing


def _accumulate_grads(model, items, batch_size: int, pad_id: int, progress, done: int, total: int, label: str,
                      statistic: str, params):
    """Gradients of ``items`` into the parameters' ``.grad``: Σ over batches of g (abs-sum), or, one example at a
    time, Σ |g_e| (sum-abs) or Σ g_e² (fisher) of ``params``, summed in float32 — left in ``.grad`` too (already
    non-negative). The per-example sums hold one more float32 copy of the scored weights while they run."""
    device = input_device(model)
    per_example = statistic != "abs-sum"
    if per_example and not params:
        raise GrinError(f"The '{statistic}' statistic needs the scored parameters.")
    acc: dict[int, torch.Tensor] = {}
    for batch in batches(items, 1 if per_example else batch_size, pad_id):
        cancel.check()
        batch = {k: v.to(device) for k, v in batch.items()}
        if (batch["labels"] != -100).any():
            nll(model, batch).backward()  # mean NLL over the label tokens, logits only where needed
            if per_example:
                for _, p in params:
                    if p.grad is None:
                        continue
                    g = p.grad.float()  # a copy only for 16-bit gradients: sums of many examples stay exact
                    g = g.abs_() if statistic == "sum-abs" else g.square_()
                    if id(p) in acc:
                        acc[id(p)].add_(g)
                    else:
                        acc[id(p)] = g
                    p.grad = None
        done += len(batch["input_ids"])
        if progress:
            progress(done, total, f"{label} gradients: {done}/{total} examples")
    for _, p in params:
        if id(p) in acc:
            p.grad = acc.pop(id(p))
    return done


def compute_scores(model: torch.nn.Module, tokenizer, forget: list[Record], retain: list[Record],
                   cfg: ScoreConfig | None = None, progress=None, keep_forget_saliency: bool = True,
                   max_tokens: int = 256) -> Scores:
    """Compute GRI scores of :func:`scored_parameters` (formula in the module docstring).

    forget, retain: records; each batch contributes the gradient of its mean NLL (G_f, G_r are sums over batches;
    with ``cfg.statistic`` sum-abs or fisher, each example alone, ``cfg.batch_size`` unused);
    with ``cfg.focus_fact`` the forget NLL is taken over the answer tokens that carry the fact (grin_ui.data.fact_span).
    progress(done, total, message): optional, called after each batch (``total`` = forget + retain examples).
    The model's weights are not changed; requires_grad flags are restored, gradients set to None and the model is
    left in eval mode.
    """
    cfg = cfg or ScoreConfig()
    if not forget:
        raise GrinError("GRI scoring needs a forget set: it is empty.")
    if not retain:
        raise GrinError("GRI scoring needs a retain set (the score is a ratio of forget to retain gradients).")
    if cfg.eps_rel < 0:
        raise GrinError(f"The score epsilon must be ≥ 0 (got eps_rel={cfg.eps_rel}).")
    if cfg.statistic not in STATISTICS:
        raise GrinError(f"Unknown score statistic '{cfg.statistic}'; use one of {', '.join(STATISTICS)}.")
    params = scored_parameters(model, cfg)
    if not params:
        raise GrinError("This model has no weights to score (no 2-D weights inside recognisable transformer blocks).")
    pad = pad_id(tokenizer)
    f_items = encode(forget, tokenizer, max_tokens, focus=cfg.focus_fact).items
    r_items = encode(retain, tokenizer, max_tokens).items
    total = len(f_items) + len(r_items)

    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    scored = {id(p) for _, p in params}
    sdt = resolve_score_dtype(cfg.score_dtype, params[0][1].dtype, params[0][1].device)
    model.eval()
    forget_abs: dict[str, torch.Tensor] = {}
    try:
        for p in model.parameters():
            p.requires_grad_(id(p) in scored)
            p.grad = None
        # forget pass: G_f accumulates in .grad, then becomes |G_f| in place (the .grad tensor itself is kept)
        done = _accumulate_grads(model, f_items, cfg.batch_size, pad, progress, 0, total, "forget", cfg.statistic,
                                 params)
        for name, p in params:
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            p.grad = None
            forget_abs[name] = g.to(sdt).abs_().nan_to_num_(0.0, 0.0, 0.0)
        # retain pass into fresh .grad
        _accumulate_grads(model, r_items, cfg.batch_size, pad, progress, done, total, "retain", cfg.statistic, params)
        retain_abs: dict[str, torch.Tensor] = {}
        l1 = 0.0
        for name, p in params:
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            p.grad = None
            g = g.to(sdt).abs_().nan_to_num_(0.0, 0.0, 0.0)
            l1 += float(g.sum(dtype=torch.float64))
            retain_abs[name] = g
        n = sum(t.numel() for t in retain_abs.values())
        eps = cfg.eps_rel * l1 / n
        if not eps > 0:
            eps = torch.finfo(torch.float32).tiny  # no retain gradient at all: avoid 0/0
        scores: dict[str, torch.Tensor] = {}
        for name, _ in params:
            r = retain_abs.pop(name).add_(eps)
            if keep_forget_saliency:
                scores[name] = torch.div(forget_abs[name], r, out=r)
            else:
                scores[name] = forget_abs.pop(name).div_(r)
                del r
    finally:
        for n_, p in model.named_parameters():
            p.requires_grad_(flags[n_])
            p.grad = None
        model.eval()
    if progress:
        progress(total, total, "indexing scores")
    return Scores(scores, forget_abs if keep_forget_saliency else None, eps, len(f_items), len(r_items))
