"""ROLoRA's adapter layer: LoRA with a trainable gate per rank component (ROLoRA paper §3.1).

Math (``ΔW = B diag(g) A``; g = 1 is plain LoRA)::

    h = W0 x + s · B (g ⊙ (A dropout(x))),      s = α / R   (R: the target average rank)

``A: r × d_in`` (Kaiming-uniform), ``B: d_out × r`` (zeros), ``g ∈ R^r`` (ones). The rank r of each
module changes between outer iterations (sparsify → extend) but the scale s stays α / R, so the
extend step can preserve the output exactly. As in :class:`~wlora.core.layer.LoRALinear`, ``B(g ⊙ Ax)``
is evaluated right to left; no dense ``d_out × d_in`` matrix is ever formed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wlora.core.layer import LoRALinear


class RankGatedLoRALinear(LoRALinear):
    """A frozen ``nn.Linear`` plus ``s · B diag(g) A``. Arguments as :class:`LoRALinear` (``gate`` must
    be False: the per-rank gate ``g`` replaces WeightLoRA's scalar one)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0, gate: bool = False):
        if gate:
            raise ValueError("RankGatedLoRALinear has a per-rank gate g; the scalar `gate` is not supported")
        super().__init__(base, r=r, alpha=alpha, dropout=dropout, gate=False)
        self.lora_g = nn.Parameter(torch.ones(self.r, device=self.lora_A.device, dtype=self.lora_A.dtype))

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [self.lora_A, self.lora_B, self.lora_g]

    def effective_factors(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """``(A, B diag(g), s)``; components with ``g_j = 0`` contribute nothing (the controller drops them)."""
        return self.lora_A.detach(), self.lora_B.detach() * self.lora_g.detach(), self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        h = self.lora_dropout(x.to(self.lora_A.dtype))
        h = F.linear(F.linear(h, self.lora_A) * self.lora_g, self.lora_B) * self.scaling
        return result + h.to(result.dtype)

    def set_rank_(self, r: int) -> None:
        """Re-shape A, g, B to rank ``r`` with uninitialised values (before loading a checkpoint)."""
        if r == self.r:
            return
        super().set_rank_(r)
        self.lora_g.data = torch.empty(r, device=self.lora_g.device, dtype=self.lora_g.dtype)

    def extra_repr(self) -> str:
        return f"r={self.r}, scaling={self.scaling:.4g}, rank_gates=True"
