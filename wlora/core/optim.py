"""In-place optimizer surgery for methods that change the set or shape of trainable tensors.

Adaptive methods remove adapters (WeightLoRA, random selection) or grow their rank (WeightLoRA+)
mid-run. Rebuilding the optimizer would lose its moments; these helpers edit it in place instead, so
the surviving tensors keep their Adam state and removed tensors leave no state behind. They work on
any ``torch.optim.Optimizer`` whose per-parameter state holds tensors shaped like the parameter
(AdamW's ``exp_avg`` / ``exp_avg_sq``) plus scalars (``step``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def unwrap_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The underlying torch optimizer of a wrapper (accelerate's ``AcceleratedOptimizer``)."""
    return getattr(optimizer, "optimizer", optimizer)


def remove_params(optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter]) -> int:
    """Remove ``params`` from every param group and drop their state. Returns how many were found."""
    opt = unwrap_optimizer(optimizer)
    doomed = {id(p): p for p in params}
    found = 0
    for group in opt.param_groups:
        kept = [p for p in group["params"] if id(p) not in doomed]
        found += len(group["params"]) - len(kept)
        group["params"] = kept
    for p in doomed.values():
        opt.state.pop(p, None)
    return found


def resize_param_(
    param: nn.Parameter,
    new_value: torch.Tensor,
    old_block: tuple[slice, ...],
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Give ``param`` a new (larger) value in place, keeping the optimizer moments of its old block.

    The Parameter object stays the same, so the optimizer keeps tracking it. Moment tensors are
    zero-padded: ``new_moment[old_block] = old_moment``, zeros elsewhere (the new block starts fresh).
    """
    if optimizer is not None:
        state = unwrap_optimizer(optimizer).state.get(param)
        if state:
            for key, val in list(state.items()):
                if torch.is_tensor(val) and val.shape == param.shape and val.dim() > 0:
                    padded = torch.zeros(new_value.shape, dtype=val.dtype, device=val.device)
                    padded[old_block] = val
                    state[key] = padded
    param.grad = None
    param.data = new_value.to(dtype=param.dtype, device=param.device)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held by the optimizer's per-parameter state tensors."""
    opt = unwrap_optimizer(optimizer)
    return sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if torch.is_tensor(v))


def set_params(optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter]) -> None:
    """Make the optimizer's single param group hold exactly ``params``, in this order.

    Tensors it already tracked keep their state, dropped ones lose it, new ones start fresh. The
    order matters: a checkpointed optimizer maps state by position, so a method that swaps its
    adapters mid-run sets the same order its ``optimizer_params()`` gives a freshly built one.
    """
    opt = unwrap_optimizer(optimizer)
    if len(opt.param_groups) != 1:
        raise ValueError(f"set_params expects one param group, the optimizer has {len(opt.param_groups)}")
    new = list(params)
    keep = {id(p) for p in new}
    for p in opt.param_groups[0]["params"]:
        if id(p) not in keep:
            opt.state.pop(p, None)
    opt.param_groups[0]["params"] = new


def reset_state(optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter]) -> None:
    """Forget the optimizer state of ``params`` (they restart like freshly added tensors)."""
    opt = unwrap_optimizer(optimizer)
    for p in params:
        opt.state.pop(p, None)


def reindex_param_(
    param: nn.Parameter,
    new_value: torch.Tensor,
    dim: int,
    src: torch.Tensor,
    dst: torch.Tensor,
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Give ``param`` a new value (any size along ``dim``), carrying optimizer moments by index.

    Moment slices ``src`` (old positions along ``dim``) move to ``dst`` (new positions); every other
    new position starts at zero. Used when components are both dropped and added (ROLoRA's extend).
    """
    if optimizer is not None:
        state = unwrap_optimizer(optimizer).state.get(param)
        if state:
            for key, val in list(state.items()):
                if torch.is_tensor(val) and val.shape == param.shape and val.dim() > 0:
                    moved = torch.zeros(new_value.shape, dtype=val.dtype, device=val.device)
                    moved.index_copy_(dim, dst.to(val.device), val.index_select(dim, src.to(val.device)))
                    state[key] = moved
    param.grad = None
    param.data = new_value.to(dtype=param.dtype, device=param.device)
