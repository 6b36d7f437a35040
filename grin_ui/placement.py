"""Where a model's tensors live: one device, or spread over several with accelerate's ``device_map``.

    dev = input_device(model)                       # where token ids / masks / labels go (the embedding's device)
    model = spread(model, {0: "70GiB", 1: "70GiB"})  # layers over two GPUs (accelerate dispatch, hooks move inputs)
    devices(model)                                  # {"cuda:0", "cuda:1"}

Rules the library follows so that a spread model works for scoring, masked unlearning and evaluation:
  * inputs go to :func:`input_device` (the input embedding's device), never to "the" model device; accelerate's
    hooks move activations between layers and bring the logits back to the input device;
  * anything built per parameter (scores, masks, optimizer state, fp32 master copies, the sparse delta's indices
    and values) is created on ``p.device`` of its own parameter — see influence, mask, train, delta, noise;
  * losses are reduced on the logits' device (labels are moved there), so the last layer may live elsewhere.

A multi-node run (FSDP through accelerate) is written down in the README ("Big models"), not built.
"""

from __future__ import annotations

import torch


def input_device(model: torch.nn.Module) -> torch.device:
    """Device of the input embeddings (where a batch must be put); the first parameter's device as a fallback."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    w = getattr(emb, "weight", None)
    if isinstance(w, torch.Tensor):
        return w.device
    return next(model.parameters()).device


def devices(model: torch.nn.Module) -> set[str]:
    """The distinct devices the model's parameters live on."""
    return {str(p.device) for p in model.parameters()}


def is_spread(model: torch.nn.Module) -> bool:
    """True when accelerate dispatched the model over a device map (hooks move inputs between its parts)."""
    return hasattr(model, "_hf_hook") or len(devices(model)) > 1


def no_split_classes(model: torch.nn.Module) -> list[str]:
    """Module classes a device map must keep whole (the decoder layer), as transformers declares them."""
    return list(getattr(model, "_no_split_modules", None) or [])


def auto_device_map(model: torch.nn.Module, max_memory: dict) -> dict:
    """accelerate's ``infer_auto_device_map``: whole decoder layers, filled device by device up to ``max_memory``
    (e.g. ``{0: "70GiB", 1: "70GiB"}`` or ``{"cpu": "2GiB"}``). Works on a meta model too (plan before loading)."""
    from accelerate import infer_auto_device_map

    return infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split_classes(model))


def spread(model: torch.nn.Module, max_memory: dict | None = None, device_map: dict | None = None,
           force_hooks: bool = False) -> torch.nn.Module:
    """Dispatch ``model`` over ``device_map`` (default: :func:`auto_device_map` of ``max_memory``) with accelerate.
    Its parameters move to their devices; hooks move each layer's inputs to it and the output back to the input
    device. ``force_hooks`` attaches the hooks even when every entry names the same device (used by the tests to run
    the dispatched code path on CPU). Returns the model (dispatched in place)."""
    from accelerate import dispatch_model

    if device_map is None:
        if max_memory is None:
            raise ValueError("spread() needs max_memory or a device_map")
        device_map = auto_device_map(model, max_memory)
    model = dispatch_model(model, device_map=device_map, force_hooks=force_hooks)
    model.hf_device_map = dict(device_map)
    return model
