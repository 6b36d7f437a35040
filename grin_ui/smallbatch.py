"""Linear layers for a few rows at a time, as greedy decoding runs them on a CPU.

A decoding step multiplies every weight matrix by one new token per row still generating — a handful of rows. At
that size the CPU BLAS computes ``F.linear`` (x·Wᵀ) far below what memory allows, and the same product taken as
W·xᵀ is much faster (bundled model, 2 cores, fp32: the vocabulary projection, 49152 × 576, at 2–6 rows 20–29 ms
against 5–8 ms). :func:`small_batch_linears` makes the plain linear layers of a model take the second form for
inputs of at most :data:`MAX_ROWS` rows while no gradient is recorded, for the duration of a ``with`` block. Only
the summation order changes (float rounding). Measured on the bundled model (``benchmarks/generation_versus.py``
style, interleaved, 6 runs each): greedy generation at batch 16 and 64 new tokens 5.22 s → 4.05 s (1.29×), the
same tokens for all 16 questions; at batch 29 no gain (1.02×), so the layers keep ``F.linear`` above 16 rows.

    with small_batch_linears(model):
        ...  # decoding steps
"""

from __future__ import annotations

import contextlib

import torch

MAX_ROWS = 16


class SmallBatchLinear(torch.nn.Linear):
    """``nn.Linear`` computing (W·xᵀ)ᵀ for at most :data:`MAX_ROWS` fp32 CPU rows without gradients."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if (torch.is_grad_enabled() or x.dim() < 2 or x.shape[:-1].numel() > MAX_ROWS or w.dtype != torch.float32
                or w.device.type != "cpu" or x.dtype != w.dtype):
            return torch.nn.functional.linear(x, w, self.bias)
        out = torch.mm(w, x.reshape(-1, x.shape[-1]).t()).t()
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], w.shape[0])


@contextlib.contextmanager
def small_batch_linears(model):
    """Within the block, the model's plain ``nn.Linear`` layers are :class:`SmallBatchLinear` (same parameters;
    subclasses such as quantized layers are left alone). Safe beside other threads using the model: both forms
    compute the same product."""
    swapped = [m for m in model.modules() if type(m) is torch.nn.Linear]
    for m in swapped:
        m.__class__ = SmallBatchLinear
    try:
        yield model
    finally:
        for m in swapped:
            m.__class__ = torch.nn.Linear
