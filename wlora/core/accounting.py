"""Parameter and memory accounting: what every method reports."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from wlora.core.layer import LoRALinear


def count_parameters(model: nn.Module, head_names: list[str] | tuple[str, ...] = ()) -> dict[str, float]:
    """Trainable parameters split into adapters (A, B), gates, head and other, plus the model total.

    ``base_model`` counts every parameter that is not an adapter or gate (frozen base + head): the
    denominator of the papers' "# Params (%)" column; ``trainable_pct`` is trainable / base_model.
    """
    adapter = gates = head = other = 0
    head_ids = {id(p) for h in head_names for p in model.get_submodule(h).parameters()}
    lora_ids: dict[int, str] = {}
    for m in model.modules():
        if isinstance(m, LoRALinear):
            # Gates: WeightLoRA's scalar ω, ROLoRA's per-rank vector g (any adapter tensor but A, B).
            for p in m.adapter_parameters():
                lora_ids[id(p)] = "gate"
            lora_ids[id(m.lora_A)] = lora_ids[id(m.lora_B)] = "adapter"
    base_model = 0
    for p in model.parameters():
        if id(p) not in lora_ids:
            base_model += p.numel()
        if not p.requires_grad:
            continue
        kind = lora_ids.get(id(p))
        if kind == "adapter":
            adapter += p.numel()
        elif kind == "gate":
            gates += p.numel()
        elif id(p) in head_ids:
            head += p.numel()
        else:
            other += p.numel()
    trainable = adapter + gates + head + other
    return {
        "adapter": adapter,
        "gates": gates,
        "head": head,
        "other": other,
        "trainable": trainable,
        "base_model": base_model,
        "trainable_pct": 100.0 * trainable / base_model if base_model else 0.0,
    }


def saved_for_backward_bytes(fn: Callable[[], torch.Tensor], model: nn.Module) -> int:
    """Bytes autograd keeps for backward while ``fn()`` builds its graph (activation memory).

    Counts each distinct storage once (views share one) and leaves out ``model``'s parameters and
    buffers, which exist whether or not a graph holds them. Backward is not run.
    """
    own = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())
