"""Random-selection ablation (WeightLoRA paper §4.4, "RLoRA"; not peft's unrelated RandLoRA).

K of the n adapters are drawn uniformly at random (seeded) at step 0, their gates fixed to 1 (plain
LoRA on them); the other n − K are removed before the optimizer is built. The baseline that shows
whether WeightLoRA's learned selection beats chance at the same parameter count.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from wlora.core.controller import Controller
from wlora.methods.random_select.config import RandomSelectConfig


class RandomSelectController(Controller):
    slug = "random_select"

    def __init__(self, model: nn.Module, config: RandomSelectConfig):
        super().__init__(model, config)
        self.k = config.resolve_k(self.n_adapters)
        gen = (
            torch.Generator().manual_seed(config.selection_seed)
            if config.selection_seed is not None
            else self.generator
        )
        chosen = set(torch.randperm(self.n_adapters, generator=gen)[: self.k].tolist())
        self.remove_adapters([n for i, n in enumerate(self.target_names) if i not in chosen])

    def report(self) -> dict[str, Any]:
        out = super().report()
        out.update(k=self.k, selected=True, selected_adapters=list(self.layers))
        return out
