"""Which weights may change (SPEC §3.2, §3.6): a boolean mask over the scored weights.

    mask = build_mask(params, scores, MaskConfig(selector="grin", sparsity=0.01, scope="global"))
    mask.selected, mask.total, mask.density_by_tensor(), mask.block_module_density()

Selectors: ``grin`` (GRI scores), ``forget-saliency`` (|G_f| alone), ``random`` (seeded, exactly as many weights as
``grin`` selects at the same sparsity and scope), ``magnitude`` (the largest |w|: a baseline that ignores the data;
our choice of direction), ``none`` (every scored weight).

``MaskConfig.normalize = "tensor"`` (our choice): before a global threshold, each tensor's scores are divided by that
tensor's median non-zero score, so that no tensor wins the selection only because its scores are larger overall. It changes nothing for the tensor and row scopes (their rankings are within a tensor).

Scopes, with p the sparsity:
  * global: the k = max(1, round(p·total)) highest scores over all scored weights;
  * tensor: the round(p·numel) highest scores of each tensor;
  * row: in each tensor, the round(p·rows) output rows (dim 0) with the highest mean score; ``selected`` counts the
    weights in those rows (rows kept × row length), i.e. the entries that may change.
Rounding is half up. Ties are broken deterministically: at equal score, the tensor earlier in model order, then the
lower flat index (lower row index for rows), is selected first — so every count is exact.

Speed: no gradient is recomputed and all scores are never concatenated. The boundary of a top-k selection comes
from the cached per-tensor histograms of :class:`grin_ui.influence.ScoreIndex` (16-bit float bins); only the
entries of that one bin are sorted, to make the count exact. When the boundary lies within the index's cache of
sorted top entries (sparsity up to ≈ 5 %), the masks are a scatter of cached indices and the scores are not read
at all; otherwise one comparison pass per tensor builds them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from grin_ui.config import NORMALIZATIONS, SCOPES, SELECTORS, MaskConfig
from grin_ui.errors import GrinError
from grin_ui.influence import ScoreIndex, Scores, bin_lower, block_module_grid, median_normalized


@dataclass
class Mask:
    """A selection of scored weights.

    masks: name -> bool tensor of the parameter's shape; tensors with no selected entry are omitted (training
    freezes them). selected: exact number of selected weights. total: number of scored weights. threshold: for
    global grin/forget-saliency masks without normalisation, log10 of a score separating the selection (every
    selected score ≥ 10^threshold ≥ every unselected score), else None. counts/numels: selected and total entries per scored tensor.
    """

    masks: dict[str, torch.Tensor]
    selected: int
    total: int
    threshold: float | None
    selector: str
    scope: str
    sparsity: float
    counts: dict[str, int] = field(default_factory=dict)
    numels: dict[str, int] = field(default_factory=dict)

    @property
    def density(self) -> float:
        """selected / total."""
        return self.selected / self.total if self.total else 0.0

    def density_by_tensor(self) -> dict[str, float]:
        """Selected fraction of every scored tensor (0.0 for tensors with nothing selected)."""
        return {n: self.counts.get(n, 0) / max(1, numel) for n, numel in self.numels.items()}

    def block_module_density(self) -> tuple[list[int], list[str], list[list[float | None]]]:
        """Heatmap data: (blocks, modules, values[block][module]) of the selected fraction of each tensor."""
        return block_module_grid(self.density_by_tensor())

    def summary(self) -> dict:
        return {"selector": self.selector, "scope": self.scope, "sparsity": self.sparsity,
                "selected": self.selected, "total": self.total, "threshold": self.threshold}


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))


def target_count(sparsity: float, total: int) -> int:
    """k = max(1, round(sparsity · total)) for the global scope (at most ``total``)."""
    return min(total, max(1, _round(sparsity * total)))


# ---------------------------------------------------------------------------------------------- top-k


def _topk(src: dict[str, torch.Tensor], index: ScoreIndex, group: list[int], hist: torch.Tensor, k: int):
    """Masks of the k highest values among the tensors ``group`` (indices into ``index.names``) whose summed
    histogram is ``hist``. Returns (masks, counts, value separating the selection)."""
    names = [index.names[t] for t in group]
    n = sum(index.numels[t] for t in group)
    if k >= n:
        return ({nm: torch.ones_like(src[nm], dtype=torch.bool) for nm in names},
                {nm: src[nm].numel() for nm in names}, 0.0)
    b = index.boundary_bin(hist, k)  # bin holding the k-th highest value (relative)
    above_all = index.hist[group, b + 1:].sum(1).tolist()  # per tensor: entries in higher bins (all selected)
    in_bin = index.hist[group, b].tolist()
    need = k - sum(above_all)  # how many of the boundary bin's entries to keep (1 .. sum(in_bin))
    if index.top_idx and all(b >= index.cache_bin[t] for t in group):
        return _topk_cached(src, index, group, b, above_all, in_bin, need)
    lo = bin_lower(index.offset + b)
    hi = bin_lower(index.offset + b + 1)
    masks, counts = {}, {}
    for j, nm in enumerate(names):
        masks[nm] = src[nm] >= lo
        counts[nm] = above_all[j] + in_bin[j]
    if need == sum(in_bin):
        return masks, counts, lo
    # refine the boundary bin exactly: gather its entries, keep the `need` largest (ties: model order, index)
    vals, owner, flat = [], [], []
    for j, nm in enumerate(names):
        if in_bin[j] == 0:
            continue
        idx = masks[nm].view(-1).nonzero().squeeze(1)
        v = src[nm].reshape(-1)[idx]
        inb = v < hi
        vals.append(v[inb].float().cpu())
        flat.append(idx[inb].cpu())
        owner.append(torch.full((int(inb.sum()),), j, dtype=torch.int64))
    vals, owner, flat = torch.cat(vals), torch.cat(owner), torch.cat(flat)
    order = torch.sort(vals, descending=True, stable=True).indices  # candidates are already in (tensor, index) order
    drop = order[need:]
    for j in owner[drop].unique().tolist():
        nm = names[j]
        sel = flat[drop[owner[drop] == j]]
        masks[nm].view(-1)[sel.to(masks[nm].device)] = False
        counts[nm] -= len(sel)
    return masks, counts, float(vals[order[need - 1]])


def _topk_cached(src, index: ScoreIndex, group, b, above_all, in_bin, need):
    """:func:`_topk` from the sorted top entries cached in ``index`` (the boundary bin is inside the cache): no
    pass over the scores, only a scatter of the selected indices."""
    vals, owner, flat = [], [], []
    for j, t in enumerate(group):
        a, c = above_all[j], in_bin[j]
        if c:
            vals.append(index.top_val[t][a:a + c])
            flat.append(index.top_idx[t][a:a + c])
            owner.append(torch.full((c,), j, dtype=torch.int64))
    vals, owner, flat = torch.cat(vals), torch.cat(owner), torch.cat(flat)
    order = torch.sort(vals, descending=True, stable=True).indices[:need]  # ties: tensor order, then flat index
    keep_owner, keep_flat = owner[order], flat[order]
    masks, counts = {}, {}
    for j, t in enumerate(group):
        nm = index.names[t]
        chosen = keep_flat[keep_owner == j]
        sel = torch.cat([index.top_idx[t][:above_all[j]], chosen]).long()
        if len(sel) == 0:
            continue
        m = torch.zeros(index.numels[t], dtype=torch.bool)
        m[sel] = True
        masks[nm] = m.view(src[nm].shape).to(src[nm].device)
        counts[nm] = len(sel)
    return masks, counts, float(vals[order[-1]])


def _top_rows(row_scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k rows with the highest mean score (ties: lower row first)."""
    order = torch.sort(row_scores.float().cpu(), descending=True, stable=True).indices
    return order[:k]


def _row_mask(shape, rows: torch.Tensor, device) -> torch.Tensor:
    m = torch.zeros(shape, dtype=torch.bool, device=device)
    m[rows.to(device)] = True
    return m


def _random_flat(total: int, k: int, g: torch.Generator) -> torch.Tensor:
    """k distinct integers in [0, total), uniform without replacement, sorted; memory ∝ k."""
    if k == 0:
        return torch.zeros(0, dtype=torch.int64)
    if k > total // 2:  # choose the complement instead
        drop = _random_flat(total, total - k, g)
        keep = torch.ones(total, dtype=torch.bool)
        keep[drop] = False
        return keep.nonzero().squeeze(1)
    got = torch.zeros(0, dtype=torch.int64)
    while len(got) < k:
        extra = torch.randint(0, total, (int((k - len(got)) * 1.1) + 16,), generator=g)
        got = torch.cat([got, extra]).unique()
    return got[torch.randperm(len(got), generator=g)[:k]].sort().values


# ---------------------------------------------------------------------------------------------- build


def build_mask(params: list[tuple[str, torch.nn.Parameter]] | None, scores: Scores | None,
               cfg: MaskConfig | None = None, seed: int = 0) -> Mask:
    """Select weights (see the module docstring). ``params``: the scored parameters (names and shapes, needed when
    ``scores`` is None, for the random and none selectors); ``scores``: needed by grin and forget-saliency.
    ``seed`` drives the random selector only."""
    cfg = cfg or MaskConfig()
    if cfg.selector not in SELECTORS:
        raise GrinError(f"Unknown mask selector '{cfg.selector}'; use one of {', '.join(SELECTORS)}.")
    if cfg.scope not in SCOPES:
        raise GrinError(f"Unknown mask scope '{cfg.scope}'; use one of {', '.join(SCOPES)}.")
    if not (0.0 < cfg.sparsity <= 1.0):
        raise GrinError(f"Sparsity must be in (0, 1] (a fraction of the scored weights), got {cfg.sparsity}.")
    if scores is not None:
        shapes = {n: (t.shape, t.device) for n, t in scores.scores.items()}
    elif params:
        shapes = {n: (p.shape, p.device) for n, p in params}
    else:
        raise GrinError("Building a mask needs the scored parameters or the scores.")
    if cfg.selector in ("grin", "forget-saliency") and scores is None:
        raise GrinError(f"The '{cfg.selector}' selector needs GRI scores: compute the influence map first.")
    if cfg.selector == "magnitude" and not params:
        raise GrinError("The 'magnitude' selector needs the scored parameters (their values).")
    if cfg.normalize not in NORMALIZATIONS:
        raise GrinError(f"Unknown score normalisation '{cfg.normalize}'; use one of {', '.join(NORMALIZATIONS)}.")
    numels = {n: math.prod(s) for n, (s, _) in shapes.items()}
    total = sum(numels.values())
    p = cfg.sparsity
    threshold = None

    if cfg.selector == "none":
        masks = {n: torch.ones(s, dtype=torch.bool, device=d) for n, (s, d) in shapes.items()}
        counts = dict(numels)
    elif cfg.selector == "random":
        g = torch.Generator().manual_seed(int(seed))
        masks, counts = {}, {}
        if cfg.scope == "global":
            flat = _random_flat(total, target_count(p, total), g)
            starts = torch.tensor([0] + list(numels.values())).cumsum(0)
            for t, (n, (s, d)) in enumerate(shapes.items()):
                lo, hi = int(starts[t]), int(starts[t + 1])
                a, b = torch.searchsorted(flat, torch.tensor([lo, hi])).tolist()
                m = torch.zeros(numels[n], dtype=torch.bool)
                m[flat[a:b] - lo] = True
                masks[n], counts[n] = m.view(s).to(d), b - a
        elif cfg.scope == "tensor":
            for n, (s, d) in shapes.items():
                k = _round(p * numels[n])
                m = torch.zeros(numels[n], dtype=torch.bool)
                m[_random_flat(numels[n], k, g)] = True
                masks[n], counts[n] = m.view(s).to(d), k
        else:
            for n, (s, d) in shapes.items():
                rows = s[0]
                k = _round(p * rows)
                masks[n] = _row_mask(s, torch.randperm(rows, generator=g)[:k], d)
                counts[n] = k * (numels[n] // rows)
    else:
        which = cfg.selector
        if which == "magnitude":
            src = {n: p.detach().abs() for n, p in params}
            if cfg.normalize == "tensor" and cfg.scope == "global":
                src = median_normalized(src)
            index = ScoreIndex.build(src) if cfg.scope != "row" else None
        elif cfg.normalize == "tensor" and cfg.scope == "global":
            src, index = scores.normalized(which)
        else:
            src = scores.scores if which == "grin" else scores.forget_saliency
            index = scores.index if which == "grin" else scores.saliency_index()
        masks, counts = {}, {}
        if cfg.scope == "global":
            k = target_count(p, total)
            masks, counts, value = _topk(src, index, list(range(len(index.names))), index.hist.sum(0), k)
            raw = which != "magnitude" and cfg.normalize == "none"  # a threshold in the scores' own units
            threshold = math.log10(value) if value > 0 and raw else None
        elif cfg.scope == "tensor":
            for t, n in enumerate(index.names):
                k = _round(p * index.numels[t])
                if k:
                    m, c, _ = _topk(src, index, [t], index.hist[t], k)
                    masks.update(m)
                    counts.update(c)
        else:
            means = (scores.row_means(which) if which != "magnitude" else
                     {n: t.reshape(t.shape[0], -1).mean(1) if t.dim() > 1 else t for n, t in src.items()})
            for n, (s, d) in shapes.items():
                rows = s[0]
                k = _round(p * rows)
                masks[n] = _row_mask(s, _top_rows(means[n], k), d)
                counts[n] = k * (numels[n] // rows)
    masks = {n: m for n, m in masks.items() if counts.get(n, 0) > 0}
    counts = {n: c for n, c in counts.items() if c > 0}
    return Mask(masks, sum(counts.values()), total, threshold, cfg.selector, cfg.scope, p, counts, numels)
