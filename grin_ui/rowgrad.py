"""Weight gradients of the selected rows or entries only, for masked training.

    with row_gradients(model, masks) as patched:     # weight name -> "rows" | "entries", for the layers handled
        loss.backward()                              # weight.grad is zero outside the selected rows / entries

A linear layer y = x Wᵀ (W: [out, in]) computes, in the backward pass, grad_W = grad_yᵀ · x — out × in × tokens
multiply-adds, as much as the forward pass. When only some entries of W may change, the optimizer reads the gradient
at those entries and nothing else (grin_ui.train: the masked AdamW gathers only the selected entries, and clipping
sees only them), so the rest need not be computed:

- **rows** (the "row" scope: whole output rows R selected): grad_W[R] = grad_y[:, R]ᵀ · x costs |R| / out of the
  dense product;
- **entries** (the global and tensor scopes: scattered entries): the sampled product — grad_yᵀ · x evaluated at the
  selected entries only (``torch.sparse.sampled_addmm`` with the mask's pattern in CSR form). Measured on this
  CPU (2 threads, fp32, 100–1000 tokens): at 1 % of the entries 0.2–3.6 ms against 0.7–10.5 ms for the dense
  product of the bundled model's matrices, about even at 10–20 %; so it is used up to :data:`MAX_ENTRY_SHARE` of a
  matrix's entries, on CPU fp32 / fp64 weights (where it was measured), and the dense product elsewhere.

The gradient with respect to x (needed by the layers below) is computed as before. Exact up to float rounding: the
selected entries' gradient is the same sum over tokens (for the sampled product in another order), and every other
entry's gradient is zero (never read). Only ``torch.nn.Linear`` layers without a trainable bias are patched; every
other masked tensor keeps autograd's dense weight gradient. The modules' own ``forward`` is restored on exit, even
after an exception.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

MAX_ROW_SHARE = 0.5  # above this share of rows the dense product is as cheap
MAX_ENTRY_SHARE = 0.05  # above this share of a matrix's entries the sampled product is not clearly cheaper


class _SelectedGradLinear(torch.autograd.Function):
    """y = x·Wᵀ + b whose backward pass computes the weight gradient with ``weight_grad(grad_y, x, weight)`` (2-D
    grad_y and x): that of the selected rows or entries only, zero elsewhere."""

    @staticmethod
    def forward(ctx, x, weight, bias, weight_grad):
        ctx.save_for_backward(x, weight)
        ctx.weight_grad = weight_grad
        return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        grad_x = grad_y @ weight if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            gy = grad_y.reshape(-1, grad_y.shape[-1])
            grad_w = ctx.weight_grad(gy, x.reshape(-1, x.shape[-1]).to(gy.dtype), weight)
        return grad_x, grad_w, None, None


def _rows_grad(rows: torch.Tensor):
    """grad_W[rows] = grad_y[:, rows]ᵀ · x."""
    def grad(gy, x, weight):
        out = torch.zeros_like(weight)
        out.index_copy_(0, rows, gy.index_select(1, rows).t() @ x)
        return out
    return grad


def _entries_grad(pattern, flat: torch.Tensor):
    """grad_yᵀ · x at the entries of ``pattern`` (CSR; ``flat``: the same entries as flat indices)."""
    def grad(gy, x, weight):
        sampled = torch.sparse.sampled_addmm(pattern, gy.t().contiguous(), x, beta=0.0)
        out = torch.zeros_like(weight)
        out.view(-1).index_copy_(0, flat, sampled.values().to(weight.dtype))
        return out
    return grad


def _entry_pattern(mask: torch.Tensor, weight: torch.Tensor, max_share: float):
    """(CSR pattern, flat indices) of a scattered 2-D mask for the sampled product, or None where it does not pay
    or was not measured (module docstring)."""
    if (mask.dim() != 2 or weight.device.type != "cpu" or weight.dtype not in (torch.float32, torch.float64)
            or not 0 < int(mask.sum()) <= max_share * mask.numel()):
        return None
    import warnings

    with warnings.catch_warnings():  # "sparse CSR support is in beta": the one operation used here is tested
        warnings.simplefilter("ignore", UserWarning)
        pattern = mask.to(device=weight.device, dtype=weight.dtype).to_sparse_csr()
    return pattern, mask.reshape(-1).nonzero().squeeze(1).to(weight.device)


def selected_rows(mask: torch.Tensor) -> torch.Tensor | None:
    """The row indices of a 2-D mask that selects whole rows only, or None when some row is partly selected."""
    if mask.dim() != 2:
        return None
    full, any_ = mask.all(dim=1), mask.any(dim=1)
    if not torch.equal(full, any_):
        return None
    return full.nonzero().squeeze(1)


@contextmanager
def row_gradients(model: torch.nn.Module, masks: dict[str, torch.Tensor], max_share: float = MAX_ROW_SHARE,
                  max_entry_share: float = MAX_ENTRY_SHARE):
    """Patch the masked linear layers whose mask is a few whole rows (the row path) or a small share of scattered
    entries (the sampled product; see the module docstring); yields {weight name: "rows" | "entries"}."""
    modules = dict(model.named_modules())
    patched: dict[str, str] = {}
    mods: list[torch.nn.Module] = []
    try:
        for name, m in masks.items():
            if not name.endswith(".weight"):
                continue
            mod = modules.get(name[: -len(".weight")])
            if not isinstance(mod, torch.nn.Linear) or (mod.bias is not None and mod.bias.requires_grad):
                continue
            rows = selected_rows(m)
            if rows is not None and 0 < len(rows) < max_share * m.shape[0]:
                grad, patched[name] = _rows_grad(rows.to(mod.weight.device)), "rows"
            else:
                entries = _entry_pattern(m, mod.weight, max_entry_share)
                if entries is None:
                    continue
                grad, patched[name] = _entries_grad(*entries), "entries"
            mod.forward = lambda x, mod=mod, grad=grad: _SelectedGradLinear.apply(x, mod.weight, mod.bias, grad)
            mods.append(mod)
        yield patched
    finally:
        for mod in mods:
            del mod.forward  # back to the class's forward
