"""In-place optimizer surgery for methods that change the set or shape of trainable tensors.

Adaptive methods remove adapters (WeightLoRA, random selection) or grow their rank (WeightLoRA+)
mid-run. Rebuilding the optimizer would lose its moments; these helpers edit it in place instead, so
the surviving tensors keep their Adam state and removed tensors leave no state behind. They work on
any ``torch.optim.Optimizer`` whose per-parameter state holds tensors shaped like the parameter
(AdamW's ``exp_avg`` / ``exp_avg_sq``) plus scalars (``step``).

Components added to a tensor mid-run (grown rank rows/columns) start with zero moments, but AdamW
keeps one ``step`` counter per tensor: its bias correction ``1 − β^t`` for a large t would make their
first updates 2–5× those of a fresh AdamW. So the surgery records, per component along the grown
dimension, the step count at which it was born (``state["born"]``, with ``state["born_dim"]``), and
:func:`track_component_ages` corrects AdamW's update of young components after every step to the
update a fresh AdamW gives them at their own age ``k = t − born``::

    p ← p + lr·m/(bc1(t)·(√v/√bc2(t) + ε)) − lr·m/(bc1(k)·(√v/√bc2(k) + ε)),   bc_i(t) = 1 − β_i^t

Moments follow the same recursion in both cases (zero start, same gradients), so only the bias
correction differs; components born at 0 (the original ones) are untouched.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

#: Optimizer-state keys of the component ages (not moments: never padded or moved as such).
AGE_KEYS = ("born", "born_dim")
#: Age beyond which β₂^k underflows float64 precision: bias corrections equal, the record is dropped.
_MATURE = 40_000


def _moment_keys(state: dict, param: nn.Parameter) -> list[str]:
    return [
        key
        for key, val in state.items()
        if key not in AGE_KEYS and torch.is_tensor(val) and val.shape == param.shape and val.dim() > 0
    ]


def _step_count(state: dict) -> float:
    step = state.get("step", 0)
    return float(step) if not torch.is_tensor(step) else float(step.item())


def _old_born(state: dict, dim: int, size: int, device) -> torch.Tensor:
    born = state.get("born")
    if born is None or state.get("born_dim") != dim:
        return torch.zeros(size, dtype=torch.float64, device=device)
    return born.to(dtype=torch.float64, device=device)


def _set_born(state: dict, dim: int, born: torch.Tensor) -> None:
    if bool((born > 0).any()):
        state["born"], state["born_dim"] = born, dim
    else:
        state.pop("born", None)
        state.pop("born_dim", None)


def _adam_update(m, v, age, beta1, beta2, lr, eps, shape) -> torch.Tensor:
    """AdamW's step ``lr·m̂/(√v̂ + ε)`` with per-component ages ``age`` along the dim of ``shape``."""
    bc1 = (1 - beta1**age).to(dtype=m.dtype, device=m.device).view(shape)
    bc2 = (1 - beta2**age).to(dtype=m.dtype, device=m.device).view(shape)
    return lr * m / (bc1 * (v.sqrt() / bc2.sqrt() + eps))


def track_component_ages(optimizer: torch.optim.Optimizer):
    """Make ``optimizer`` (a torch AdamW) give components added mid-run a fresh AdamW's update.

    Registers a step post-hook (it runs only when ``step()`` runs, so steps a GradScaler skips are
    skipped here too). Returns the hook handle.
    """
    opt = unwrap_optimizer(optimizer)

    @torch.no_grad()
    def correct(o, args, kwargs) -> None:
        for group in o.param_groups:
            if group.get("amsgrad") or group.get("maximize"):
                raise ValueError("component ages support AdamW without amsgrad / maximize")
            beta1, beta2 = group["betas"]
            lr, eps = float(group["lr"]), group["eps"]
            for p in group["params"]:
                st = o.state.get(p)
                if not st or "born" not in st:
                    continue
                t = _step_count(st)
                dim = st["born_dim"]
                age = (t - st["born"].to(torch.float64)).clamp(min=1.0)
                young = age < t
                if not bool(young.any()):
                    continue
                shape = [1] * p.dim()
                shape[dim] = -1
                m, v = st["exp_avg"], st["exp_avg_sq"]
                ages = (torch.full_like(age, t), age)
                shared, own = (_adam_update(m, v, a, beta1, beta2, lr, eps, shape) for a in ages)
                keep = young.to(m.device).view(shape).expand_as(m)
                p.add_(torch.where(keep, shared - own, torch.zeros_like(m)))
                if float(age.min()) > _MATURE:
                    _set_born(st, dim, torch.zeros_like(st["born"]))

    return opt.register_step_post_hook(correct)


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
    zero-padded: ``new_moment[old_block] = old_moment``, zeros elsewhere, and the new components are
    recorded as born at the current step (see :func:`track_component_ages`).
    """
    if optimizer is not None:
        state = unwrap_optimizer(optimizer).state.get(param)
        if state:
            for key in _moment_keys(state, param):
                val = state[key]
                padded = torch.zeros(new_value.shape, dtype=val.dtype, device=val.device)
                padded[old_block] = val
                state[key] = padded
            grown = [d for d in range(param.dim()) if new_value.shape[d] != param.shape[d]]
            if len(grown) == 1:
                dim = grown[0]
                born = torch.full((new_value.shape[dim],), _step_count(state), dtype=torch.float64)
                born[old_block[dim]] = _old_born(state, dim, param.shape[dim], "cpu")
                _set_born(state, dim, born)
            elif grown:
                raise ValueError(f"resize_param_ grows one dimension at a time, got {param.shape} -> {new_value.shape}")
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

    Moment slices ``src`` (old positions along ``dim``) move to ``dst`` (new positions) with their
    ages; every other new position starts at zero and is born now (see :func:`track_component_ages`).
    Used when components are both dropped and added (ROLoRA's extend).
    """
    if optimizer is not None:
        state = unwrap_optimizer(optimizer).state.get(param)
        if state:
            for key in _moment_keys(state, param):
                val = state[key]
                moved = torch.zeros(new_value.shape, dtype=val.dtype, device=val.device)
                moved.index_copy_(dim, dst.to(val.device), val.index_select(dim, src.to(val.device)))
                state[key] = moved
            old = _old_born(state, dim, param.shape[dim], "cpu")
            born = torch.full((new_value.shape[dim],), _step_count(state), dtype=torch.float64)
            born[dst.cpu()] = old[src.cpu()]
            _set_born(state, dim, born)
    param.grad = None
    param.data = new_value.to(dtype=param.dtype, device=param.device)
