"""The LoRA adapter layer shared by every low-rank method.

Math (Hu et al., 2021; peft's ``lora.Linear``)::

    h = W0 x + s · g · B (A dropout(x)) = W0 x + B (s · g · A dropout(x)),      s = α / r

``A: r × d_in`` (Kaiming-uniform), ``B: d_out × r`` (zeros), ``g`` an optional scalar gate
(WeightLoRA's ω). The product is always evaluated right to left, ``B (A x)``: a dense ``B @ A``
(``d_out × d_in``) is never formed, so cost and memory stay O(r · (d_in + d_out)) per token. The gate
multiplies the rank-r intermediate ``A x``, so a gated adapter saves as much for backward as a plain one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a rank-``r`` adapter.

    Args:
        base: the pretrained linear layer; its parameters are frozen here.
        r: adapter rank (> 0).
        alpha: LoRA α; the scale is ``s = alpha / r`` and stays fixed if the rank later grows.
        dropout: dropout probability on the adapter input.
        gate: if True, add a trainable scalar gate ``g`` (init 1) multiplying the adapter output.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0, gate: bool = False):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps nn.Linear, got {type(base).__name__}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.r = int(r)
        #: Effective adapter scale s (python float so it matches peft's arithmetic exactly).
        self.scaling = float(alpha) / self.r
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        dev = base.weight.device
        # Half-precision bases (bf16/fp16 checkpoints) get fp32 adapters, as peft does: AdamW on
        # half-precision low-rank factors loses small updates. The forward casts around them.
        dt = torch.float32 if base.weight.dtype in (torch.float16, torch.bfloat16) else base.weight.dtype
        self.lora_A = nn.Parameter(torch.empty(self.r, base.in_features, device=dev, dtype=dt))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, self.r, device=dev, dtype=dt))
        # Same init as peft (and nn.Linear): uniform(-1/sqrt(d_in), 1/sqrt(d_in)).
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        # Gate kept in fp32: it is a single scalar updated by plain SGD.
        self.register_parameter("gate", nn.Parameter(torch.ones((), device=dev, dtype=torch.float32)) if gate else None)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def adapter_numel(self) -> int:
        """Parameters in A and B: ``r · (d_in + d_out)``."""
        return self.r * (self.in_features + self.out_features)

    def adapter_parameters(self) -> list[nn.Parameter]:
        """The adapter's own tensors (A, B and, if present, the gate); subclasses add theirs."""
        return [self.lora_A, self.lora_B] + ([self.gate] if self.gate is not None else [])

    def effective_factors(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """``(A, B', c)`` with ``ΔW x = c · B' (A x)`` — what a plain LoRA export has to reproduce."""
        scale = self.scaling * (float(self.gate) if self.gate is not None else 1.0)
        return self.lora_A.detach(), self.lora_B.detach(), scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        h = self.lora_dropout(x.to(self.lora_A.dtype))
        h = F.linear(h, self.lora_A)
        if self.gate is None:
            h = F.linear(h, self.lora_B) * self.scaling  # peft's order of operations
        else:
            # ω·s·B(Ax) = B(ω·s·(Ax)): gating the rank-r intermediate, autograd keeps r numbers per
            # token for ∇ω instead of the d_out-sized adapter output.
            h = F.linear(h * (self.gate * self.scaling), self.lora_B)
        return result + h.to(result.dtype)

    # ----- structural edits (used by controllers; never called inside forward) -----

    def drop_gate(self, fold: bool = True) -> None:
        """Freeze the gate by folding it into the scale (``s ← s · g``) and deleting the parameter."""
        if self.gate is None:
            return
        if fold:
            self.scaling = self.scaling * float(self.gate.detach())
        self.gate = None

    def set_rank_(self, r: int) -> None:
        """Re-shape A/B to rank ``r`` with uninitialised values (used before loading a checkpoint)."""
        if r == self.r:
            return
        self.lora_A.data = torch.empty(r, self.in_features, device=self.lora_A.device, dtype=self.lora_A.dtype)
        self.lora_B.data = torch.empty(self.out_features, r, device=self.lora_B.device, dtype=self.lora_B.dtype)
        self.r = int(r)

    def extra_repr(self) -> str:
        return f"r={self.r}, scaling={self.scaling:.4g}, gate={self.gate is not None}"
