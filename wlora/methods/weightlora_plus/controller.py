"""WeightLoRA+ (WeightLoRA paper §3.4; official code: FatAdamW).

Phase 1 = WeightLoRA for T steps. Phase 2: the n − K unselected adapters are removed and the K
survivors' ranks grow so the adapter parameter budget stays the original one:

    Σ_{i ∈ kept} r_i (d_in_i + d_out_i) ≤ n · r · (d_in + d_out)      (r_new = ⌊r·n/K⌋ for equal shapes)

Growth preserves the model output exactly (``B_new A_new = B A``, scale unchanged) and keeps the
AdamW moments of the old blocks; see :mod:`wlora.core.growth` for the two inits. With ``stages > 1``
each stage ends with a removal and a growth (K halves, r doubles).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from wlora.core.growth import grow_rank_, plan_ranks
from wlora.core.selection import GatedSelection
from wlora.methods.weightlora_plus.config import WeightLoRAPlusConfig


class WeightLoRAPlusController(GatedSelection):
    slug = "weightlora_plus"

    def __init__(self, model: nn.Module, config: WeightLoRAPlusConfig):
        super().__init__(model, config, stages=config.stages)
        #: The adapter parameter budget: what plain LoRA on all n targets would train.
        self.budget = self.adapter_param_count()

    def on_stage_end(self, survivors: list[str], optimizer: torch.optim.Optimizer | None) -> None:
        ranks = plan_ranks(self.layers, survivors, self.budget)
        for name in survivors:
            grow_rank_(self.layers[name], ranks[name], self.config.init, self.generator, optimizer)

    def report(self) -> dict[str, Any]:
        out = super().report()
        out["budget"] = self.budget
        return out
