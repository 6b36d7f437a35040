"""SparseDelta: the exact difference between an original model and its unlearned version (SPEC §3.5).

For every changed tensor it keeps the flat indices of the entries that may have changed, their original values and
their new values. It undoes bit-exactly, exports compactly as safetensors, and lets many sessions share one base
model (apply under a lock, use, undo).

    delta = SparseDelta.capture(model, originals)     # originals: {name: (flat_idx, old_values)} taken before
    with delta.applied(model): ...                    # unlearned state inside, original state after
    delta.save("delta.safetensors"); SparseDelta.load("delta.safetensors")

A tensor where more than half of the entries are listed is stored densely (``idx`` is None, old/new have the
tensor's full shape): an unmasked baseline then costs two copies of the tensor instead of three.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

DENSE_FRACTION = 0.5


@dataclass
class DeltaEntry:
    idx: torch.Tensor | None  # int64 flat indices into the tensor, or None when dense
    old: torch.Tensor  # original values: [len(idx)] or the full shape when dense
    new: torch.Tensor  # values after unlearning, same shape as old

    @property
    def count(self) -> int:
        return self.old.numel()

    def changed_mask(self, shape, device=None) -> torch.Tensor:
        """Bool tensor of the parameter's ``shape``: True where the new value differs from the old one."""
        moved = (self.new != self.old).to(device)
        if self.idx is None:
            return moved.reshape(shape)
        mask = torch.zeros(math.prod(shape), dtype=torch.bool, device=device)
        mask[self.idx.to(device)[moved.reshape(-1)]] = True
        return mask.reshape(shape)


class SparseDelta:
    def __init__(self, entries: dict[str, DeltaEntry] | None = None, meta: dict | None = None):
        self.entries: dict[str, DeltaEntry] = entries or {}
        self.meta: dict = meta or {}

    # ------------------------------------------------------------------ building

    @staticmethod
    def snapshot(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> dict[str, tuple]:
        """Record (flat_idx, old_values) of the masked entries before they change. ``masks``: name -> bool tensor
        of the parameter's shape. Dense tensors (most entries masked) are copied whole (idx None)."""
        params = dict(model.named_parameters())
        out = {}
        for name, m in masks.items():
            p = params[name].detach()
            if m.sum().item() > DENSE_FRACTION * m.numel():
                out[name] = (None, p.clone())
            else:
                idx = m.reshape(-1).nonzero().squeeze(1).to(p.device)
                out[name] = (idx, p.reshape(-1)[idx].clone())
        return out

    @classmethod
    def capture(cls, model: torch.nn.Module, originals: dict[str, tuple], meta: dict | None = None) -> "SparseDelta":
        """Build the delta from a snapshot taken before training and the model's current values. Entries whose
        value did not change are kept (they were allowed to change; their count is the mask size)."""
        params = dict(model.named_parameters())
        entries = {}
        for name, (idx, old) in originals.items():
            p = params[name].detach()
            new = p.clone() if idx is None else p.reshape(-1)[idx].clone()
            entries[name] = DeltaEntry(idx, old, new)
        return cls(entries, meta)

    # ------------------------------------------------------------------ using

    @property
    def nnz(self) -> int:
        """Number of entries the delta covers (selected entries)."""
        return sum(e.count for e in self.entries.values())

    def changed(self) -> int:
        """Number of entries whose value actually differs."""
        return sum(int((e.new != e.old).sum()) for e in self.entries.values())

    @torch.no_grad()
    def _write(self, model: torch.nn.Module, which: str) -> None:
        params = dict(model.named_parameters())
        for name, e in self.entries.items():
            p = params[name]
            values = getattr(e, which).to(device=p.device, dtype=p.dtype)
            if e.idx is None:
                p.copy_(values)
            else:
                p.view(-1).index_copy_(0, e.idx.to(p.device), values)

    def apply(self, model: torch.nn.Module) -> None:
        """Write the new values into ``model`` (which must hold the original values)."""
        self._write(model, "new")

    def undo(self, model: torch.nn.Module) -> None:
        """Write the original values back: the model is bit-identical to before ``apply``."""
        self._write(model, "old")

    @contextmanager
    def applied(self, model: torch.nn.Module):
        """``with delta.applied(model):`` the unlearned state inside, the original state after (even on error)."""
        self.apply(model)
        try:
            yield model
        finally:
            self.undo(model)

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> None:
        """Save as safetensors: ``<name>.idx`` (absent when dense), ``<name>.old``, ``<name>.new``."""
        tensors = {}
        for name, e in self.entries.items():
            if e.idx is not None:
                tensors[f"{name}.idx"] = e.idx.contiguous().cpu()
            tensors[f"{name}.old"] = e.old.contiguous().cpu()
            tensors[f"{name}.new"] = e.new.contiguous().cpu()
        save_file(tensors, str(path), metadata={"format": "grin-ui-sparse-delta", "meta": json.dumps(self.meta)})

    @classmethod
    def load(cls, path: str | Path) -> "SparseDelta":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            info = f.metadata() or {}
        tensors = load_file(str(path))
        names = sorted({k.rsplit(".", 1)[0] for k in tensors})
        entries = {n: DeltaEntry(tensors.get(f"{n}.idx"), tensors[f"{n}.old"], tensors[f"{n}.new"]) for n in names}
        return cls(entries, json.loads(info.get("meta", "{}")))
