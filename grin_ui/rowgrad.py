"""Weight gradients of the selected rows only, for masks that select whole output rows (the "row" scope).

    with row_gradients(model, masks) as patched:     # names of the nn.Linear weights handled this way
        loss.backward()                              # weight.grad is zero outside the selected rows

A linear layer y = x Wᵀ (W: [out, in]) computes, in the backward pass, grad_W = grad_yᵀ · x — out × in × tokens
multiply-adds, as much as the forward pass. When only the rows R of W may change, the optimizer reads grad_W[R] and
nothing else, so computing grad_W[R] = grad_y[:, R]ᵀ · x costs |R| / out of that. At the row scope and 1 % sparsity
that removes nearly all weight-gradient work of the masked matrices; the gradient with respect to x (needed by the
layers below) is computed as before. Exact: grad_W[R] is the same product restricted to those rows, and every other
row's gradient is zero (it is never read: the masked optimizer gathers only the selected entries).

Only ``torch.nn.Linear`` layers without a trainable bias whose mask is a union of whole rows that covers less than
:data:`MAX_ROW_SHARE` of them are patched; every other masked tensor keeps autograd's dense weight gradient. The
modules' own ``forward`` is restored on exit, even after an exception.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

MAX_ROW_SHARE = 0.5  # above this share of rows the dense product is as cheap


class _RowGradLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, rows):
        ctx.save_for_backward(x, weight, rows)
        return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, rows = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_y @ weight
        if ctx.needs_input_grad[1]:
            gy = grad_y.reshape(-1, grad_y.shape[-1]).index_select(1, rows)
            grad_w = torch.zeros_like(weight)
            grad_w.index_copy_(0, rows, gy.t() @ x.reshape(-1, x.shape[-1]).to(gy.dtype))
        return grad_x, grad_w, None, None


def selected_rows(mask: torch.Tensor) -> torch.Tensor | None:
    """The row indices of a 2-D mask that selects whole rows only, or None when some row is partly selected."""
    if mask.dim() != 2:
        return None
    full, any_ = mask.all(dim=1), mask.any(dim=1)
    if not torch.equal(full, any_):
        return None
    return full.nonzero().squeeze(1)


@contextmanager
def row_gradients(model: torch.nn.Module, masks: dict[str, torch.Tensor], max_share: float = MAX_ROW_SHARE):
    """Patch the masked linear layers whose mask is whole rows (see the module docstring); yields their weight
    names."""
    modules = dict(model.named_modules())
    patched: dict[str, torch.nn.Module] = {}
    try:
        for name, m in masks.items():
            if not name.endswith(".weight"):
                continue
            mod = modules.get(name[: -len(".weight")])
            if not isinstance(mod, torch.nn.Linear) or (mod.bias is not None and mod.bias.requires_grad):
                continue
            rows = selected_rows(m)
            if rows is None or not 0 < len(rows) < max_share * m.shape[0]:
                continue
            rows = rows.to(mod.weight.device)
            mod.forward = (lambda x, mod=mod, rows=rows:
                           _RowGradLinear.apply(x, mod.weight, mod.bias, rows))
            patched[name] = mod
        yield list(patched)
    finally:
        for mod in patched.values():
            del mod.forward  # back to the class's forward
