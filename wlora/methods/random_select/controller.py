"""Random-selection ablation (WeightLoRA paper §4.4, "RLoRA"; not peft's unrelated RandLoRA).

"Exactly the same method as WeightLoRA, except that we do not disable the adapters by an optimized
weights ω, but randomly": all n adapters train as plain LoRA (no gates) for T optimizer steps; at
the end of step T a seeded uniform draw of K survives and the other n − K are physically removed
(parameters, gradients and optimizer state), as WeightLoRA removes its zero-gated ones. From then on
the run trains K · r · (d_in + d_out) adapter parameters. ``t = 0`` draws before the first step (the
official code's ``use_rand``): the n − K never enter the optimizer.

The baseline that shows whether WeightLoRA's learned selection beats chance at the same parameter
count and the same schedule. The draw is made when the method is built (from ``selection_seed`` or
the run's seed), so it does not depend on what trains before step T.

Hooks: ``after_optimizer_step`` (removal at step T).
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
        #: The K survivors of the draw, in model order.
        self.chosen: list[str] = [n for i, n in enumerate(self.target_names) if i in chosen]
        self.selected = False
        if config.t == 0:
            self._select(None)

    def after_optimizer_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        if not self.selected and step >= self.config.t:
            self._select(optimizer)

    def _select(self, optimizer: torch.optim.Optimizer | None) -> None:
        keep = set(self.chosen)
        self.remove_adapters([n for n in self.layers if n not in keep], optimizer)
        self.selected = True

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(selected=self.selected, chosen=list(self.chosen))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.selected = bool(state["selected"])
        self.chosen = list(state["chosen"])

    def report(self) -> dict[str, Any]:
        out = super().report()
        out.update(
            k=self.k,
            t=self.config.t,
            selected=self.selected,
            selected_adapters=list(self.layers) if self.selected else [],
            drawn_adapters=list(self.chosen),
        )
        return out
