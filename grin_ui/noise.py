"""Noise injection into the masked weights (SPEC §3.3).

    θ_i ← θ_i + m_i · κ · σ_T · z_i,   z_i ~ N(0, 1)

m: the mask, κ: ``NoiseConfig.scale``, σ_T: the standard deviation of all entries of the weight tensor T before the
noise (``mode="relative"``) or 1 (``mode="absolute"``: κ itself is the standard deviation). Seeded: z is drawn from a
CPU ``torch.Generator`` seeded with ``seed``, tensor after tensor in model order, one value per masked entry in flat
index order, so the same seed gives the same noise on any device. κ = 0 changes nothing.
"""

from __future__ import annotations

import torch

from grin_ui.config import NOISE_MODES, NoiseConfig
from grin_ui.errors import GrinError


@torch.no_grad()
def add_noise(model: torch.nn.Module, mask, cfg: NoiseConfig | None = None, seed: int = 0) -> None:
    """Add κ·σ_T·z to the entries selected by ``mask`` (a :class:`grin_ui.mask.Mask`), in place. Unmasked entries
    are not written."""
    cfg = cfg or NoiseConfig()
    if cfg.mode not in NOISE_MODES:
        raise GrinError(f"Unknown noise mode '{cfg.mode}'; use one of {', '.join(NOISE_MODES)}.")
    if cfg.scale < 0:
        raise GrinError(f"The noise scale must be ≥ 0, got {cfg.scale}.")
    if cfg.scale == 0:
        return
    g = torch.Generator().manual_seed(int(seed))
    for name, p in model.named_parameters():
        m = mask.masks.get(name)
        if m is None:
            continue
        sigma = float(p.float().std()) if cfg.mode == "relative" else 1.0
        idx = m.reshape(-1).nonzero().squeeze(1).to(p.device)
        z = torch.randn(len(idx), generator=g, dtype=torch.float32)
        flat = p.view(-1)
        noisy = flat[idx].float() + (cfg.scale * sigma) * z.to(p.device)
        flat.index_copy_(0, idx, noisy.to(p.dtype))
