"""The optimizer step every method shares, with checkpoint/resume of the method state.

:class:`Engine` owns AdamW and the linear warm-up schedule for one model and calls the method's
controller hooks in the documented order (see :mod:`wlora.core.controller`)::

    1) forward + backward (over the gradient-accumulation micro-batches, under autocast)
    2) fp16: unscale the gradients — the optimizer's and those of the tensors the method updates
       itself (WeightLoRA's gates) — and detect an overflow; clip gradients (optional)
    3) controller.before_optimizer_step   — e.g. WeightLoRA's gate SGD + top-K projection
    4) optimizer.step(); scheduler.step()
    5) controller.after_optimizer_step    — e.g. remove adapters at step T, grow ranks
    6) zero_grad

On an fp16 overflow step (a non-finite gradient after unscaling, the GradScaler's own test) steps 3)
and the parameter update of 4) are skipped together, so the gates never move on a step the
optimizer skips; the schedule, the step counter and 5) advance as usual, with the gradients zeroed.

The schedule counts all steps (warm-up is not restarted when WeightLoRA removes adapters). A method
with a separate importance run before the task run (LoRA-drop, ``method.importance_steps = P > 0``)
gets two schedules, as two runs would: steps ``1..P`` decay linearly from the peak lr without warm-up
(``lr·(P − i)/P`` at step i + 1, so every importance step trains), then the task run starts a fresh
warm-up/decay over the remaining ``total_steps − P`` steps.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from wlora.core.controller import Controller
from wlora.core.optim import track_component_ages


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; raised before the optimizer step, so the weights are untouched."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"non-finite loss {loss} at optimizer step {step}")
        self.step = step
        self.loss = loss


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and all GPUs)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def phased_lr_lambda(importance_steps: int, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """The lr multiplier after ``i`` scheduler steps: the importance run's linear decay for ``i < P``,
    then ``transformers``' linear warm-up/decay restarted over the task run's ``total_steps − P`` steps."""
    task_total = max(1, total_steps - importance_steps)

    def factor(i: int) -> float:
        if i < importance_steps:  # 1) importance run: peak lr, linear decay, never 0 inside the run
            return (importance_steps - i) / importance_steps
        j = i - importance_steps
        if j < warmup_steps:  # 2) task run: warm-up from 0
            return j / max(1, warmup_steps)
        return max(0.0, (task_total - j) / max(1, task_total - warmup_steps))  # 3) linear decay to 0

    return factor


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Engine:
    """AdamW + linear warm-up/decay + method hooks for one model.

    Args:
        model: a model whose adapters were injected by ``method`` (``wlora.build_method``).
        method: the method's controller.
        lr: peak AdamW learning rate (adapters and head).
        total_steps: optimizer steps of the whole run (for the linear decay).
        warmup_steps: linear warm-up steps from 0 to ``lr``.
        weight_decay: AdamW decoupled weight decay.
        betas, eps: AdamW constants (paper defaults).
        max_grad_norm: clip the global gradient norm of the optimizer's parameters and the method's
            self-managed ones (gates), as when the gates sit in the optimizer (official WeightLoRA
            code under the HF Trainer); None = off.
        autocast: context-manager factory for the forward pass (e.g. ``accelerator.autocast``).
        grad_scaler: a ``torch.amp.GradScaler`` for fp16 (e.g. ``accelerator.scaler``). The gradients of
            the optimizer's tensors *and* of the method's self-managed ones (gates) are unscaled before
            clipping and before the method hook, so gate updates see true gradients; an overflow in
            any of them skips the whole update (optimizer and gates) and lowers the scale.
        forward_model: the module to call for the loss when it differs from ``model`` (a wrapper).
    """

    def __init__(
        self,
        model: nn.Module,
        method: Controller,
        *,
        lr: float,
        total_steps: int,
        warmup_steps: int = 0,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        max_grad_norm: float | None = None,
        autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
        grad_scaler: Any = None,
        forward_model: nn.Module | None = None,
    ):
        if lr <= 0:
            raise ValueError(f"`lr` must be > 0, got {lr}")
        if total_steps <= 0 or warmup_steps < 0:
            raise ValueError(f"need total_steps > 0 and warmup_steps >= 0, got {total_steps}, {warmup_steps}")
        self.model = model
        self.method = method
        self.lr = lr
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.weight_decay = weight_decay
        self.betas = betas
        self.eps = eps
        self.max_grad_norm = max_grad_norm
        self.autocast = autocast or contextlib.nullcontext
        self.grad_scaler = grad_scaler
        self.forward_model = forward_model if forward_model is not None else getattr(method, "forward_model", model)
        #: Optimizer steps completed.
        self.step = 0
        #: Whether the last step's update was skipped (fp16 overflow).
        self.last_step_skipped = False
        self._build_optimizer()

    def _build_optimizer(self) -> None:
        params = self.method.optimizer_params()
        self.optimizer = torch.optim.AdamW(
            params, lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay
        )
        # Rank components grown mid-run get a fresh AdamW's bias correction (see wlora.core.optim).
        track_component_ages(self.optimizer)
        phase = int(getattr(self.method, "importance_steps", 0) or 0)
        if phase > 0:
            self.scheduler = LambdaLR(self.optimizer, phased_lr_lambda(phase, self.warmup_steps, self.total_steps))
        else:
            # transformers' get_linear_schedule_with_warmup, value for value (tested); importing it would pull in
            # transformers.trainer_utils and with it peft, ~3 s of every trial process's start.
            self.scheduler = LambdaLR(self.optimizer, phased_lr_lambda(0, self.warmup_steps, self.total_steps))
        self.method.on_train_begin(self.optimizer)

    def lr_scale(self) -> float:
        """The schedule's current multiplier (lr in use / peak lr)."""
        return self.scheduler.get_last_lr()[0] / self.lr

    def train_step(self, batch: Mapping[str, torch.Tensor] | Sequence[Mapping[str, torch.Tensor]]) -> float:
        """One optimizer step on ``batch`` (model inputs incl. labels) or on a list of micro-batches
        (gradient accumulation; each weighted by its share of the examples). Returns the mean loss.

        Raises:
            NonFiniteLossError: a micro-batch loss is NaN/inf; no update happened.
        """
        micro = [batch] if isinstance(batch, Mapping) else list(batch)
        sizes = [len(next(iter(mb.values()))) for mb in micro]
        total = sum(sizes)
        self.forward_model.train()
        step = self.step + 1
        # 1) forward + backward, accumulating gradients over the micro-batches
        value = 0.0
        for mb, n in zip(micro, sizes, strict=True):
            with self.autocast():
                loss = self.forward_model(**mb).loss
            v = float(loss.detach())
            if not np.isfinite(v):
                self.model.zero_grad(set_to_none=True)
                raise NonFiniteLossError(step, v)
            scaled = loss * (n / total)
            if self.grad_scaler is not None:
                scaled = self.grad_scaler.scale(scaled)
            scaled.backward()
            value += v * n / total
        # 2) unscale (fp16) every gradient an update will use, then clip
        managed = [p for p in self.method.self_managed_params() if p.grad is not None]
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        scaler = self.grad_scaler if self.grad_scaler is not None and self.grad_scaler.is_enabled() else None
        skip = False
        if scaler is not None:
            scaler.unscale_(self.optimizer)
            # The gates are not in the optimizer; a carrier optimizer (never stepped) hands them to the
            # same scaler, so they are divided by the same scale and their overflow counts in update().
            carrier = torch.optim.SGD(managed, lr=0.0) if managed else None
            if carrier is not None:
                scaler.unscale_(carrier)
            grads = [p.grad for p in params + managed if p.grad is not None]
            skip = bool(grads) and not bool(torch.stack([g.isfinite().all() for g in grads]).all())
        self.last_step_skipped = skip
        if skip:
            # after_optimizer_step still runs (step-scheduled events keep their step); sensitivity
            # scores it accumulates (ROLoRA, AdaLoRA) must not read inf/NaN: this step carries none.
            for g in grads:
                g.zero_()
        if self.max_grad_norm is not None and not skip:
            # The optimizer's groups are exactly the live trainable tensors (surgery keeps them
            # current); the gates count in the norm as they would inside the optimizer.
            torch.nn.utils.clip_grad_norm_(params + managed, self.max_grad_norm)
        # 3) method hook before the update (uses this step's gradients and lr)
        if not skip:
            self.method.before_optimizer_step(step, self.lr_scale())
        # 4) update + schedule
        if scaler is not None:
            if not skip:
                scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        # 5) method hook after the update (may remove/grow tensors, editing the optimizer in place)
        self.method.after_optimizer_step(step, self.optimizer)
        # 6) clear all gradients, including any the method keeps out of the optimizer
        self.model.zero_grad(set_to_none=True)
        self.step = step
        return value

    # ----- checkpointing -----

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically: weights, optimizer, schedule, method, RNG."""
        return {
            "step": self.step,
            "method": self.method.state_dict(),
            "model": self.trainable_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": _rng_state(),
            **({"grad_scaler": self.grad_scaler.state_dict()} if self.grad_scaler is not None else {}),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore on a freshly built model + method + engine (same configs as the saved run)."""
        # The method first: it re-applies removed adapters / grown ranks so shapes match.
        self.method.load_state_dict(state["method"])
        expected = {n for n, p in self.model.named_parameters() if p.requires_grad}
        saved = set(state["model"])
        if expected != saved:
            raise ValueError(
                f"checkpoint does not match the model: missing {sorted(expected - saved)[:5]}, "
                f"unexpected {sorted(saved - expected)[:5]}"
            )
        self.model.load_state_dict(state["model"], strict=False)
        self._build_optimizer()  # the parameter set may have changed since __init__
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        if self.grad_scaler is not None and "grad_scaler" in state:
            self.grad_scaler.load_state_dict(state["grad_scaler"])
        _set_rng_state(state["rng"])

    def save(self, path: str | Path) -> None:
        torch.save(self.state_dict(), Path(path))

    def load(self, path: str | Path) -> None:
        self.load_state_dict(torch.load(Path(path), weights_only=False))
