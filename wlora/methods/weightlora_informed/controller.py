"""WeightLoRA with an informed selection: WeightLoRA's controller; only the config's default differs."""

from __future__ import annotations

from torch import nn

from wlora.core.selection import GatedSelection
from wlora.methods.weightlora_informed.config import WeightLoRAInformedConfig


class WeightLoRAInformedController(GatedSelection):
    slug = "weightlora_informed"

    def __init__(self, model: nn.Module, config: WeightLoRAInformedConfig):
        super().__init__(model, config, stages=1)
