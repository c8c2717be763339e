"""Scalar adapter gates trained by StoIHT (WeightLoRA paper §3.3, Nguyen et al. 2014).

One step, for the gate vector ω (one entry per adapter):

    ω ← P_K(ω − lr_w · ∇ω),   P_K keeps the K entries of largest |ω| (or largest ω) and zeroes the rest.

The step is skipped while the update lr_w · ∇ω is exactly zero (B = 0 at the first step, or a
warm-up multiplier of 0): projecting a vector of tied ones would pick adapters by index, not by
merit. Zeroed gates keep receiving gradient (∂L/∂ω_i does not depend on ω_i) and may re-enter the
top-K before selection.

``project=False`` is the ``projection_start`` ablation: a dense SGD step on ω, no projection.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from wlora.core.layer import LoRALinear


def gate_scores(values: torch.Tensor, topk_by: str) -> torch.Tensor:
    """The score ranked by the projection: |ω| (``"abs"``) or ω (``"value"``)."""
    return values.abs() if topk_by == "abs" else values


def topk_indices(values: torch.Tensor, k: int, topk_by: str) -> torch.Tensor:
    """Indices of the K best gates; ties broken by adapter order (stable), so runs are reproducible."""
    order = torch.sort(gate_scores(values, topk_by), descending=True, stable=True).indices
    return order[:k]


class GateSGD:
    """Plain SGD + hard-threshold top-K projection on the gates of ``layers``.

    Call :meth:`step` after ``loss.backward()`` and before ``zero_grad()``; it consumes (clears) the
    gates' gradients itself, since the gates are not in the AdamW optimizer.
    """

    def __init__(self, layers: Mapping[str, LoRALinear], lr_w: float, topk_by: str):
        self.layers = layers
        self.lr_w = lr_w
        self.topk_by = topk_by

    def values(self) -> torch.Tensor:
        return torch.stack([layer.gate.detach() for layer in self.layers.values()])

    def step(self, k: int, lr_scale: float = 1.0, project: bool = True) -> torch.Tensor | None:
        """One SGD step, then (``project``) the projection onto ‖ω‖₀ ≤ k. Returns the step's update
        lr_w · ∇ω (before projection), or None if the step was skipped (zero update)."""
        gates = [layer.gate for layer in self.layers.values()]
        grads = torch.stack([g.grad if g.grad is not None else torch.zeros_like(g) for g in gates])
        for g in gates:
            g.grad = None
        update = (self.lr_w * lr_scale) * grads
        if not bool(update.any()):
            return None
        with torch.no_grad():
            new = self.values() - update
            if project:
                keep = torch.zeros_like(new, dtype=torch.bool)
                keep[topk_indices(new, k, self.topk_by)] = True
                new = torch.where(keep, new, torch.zeros_like(new))
            for g, v in zip(gates, new, strict=True):
                g.copy_(v)
        return update.detach()
