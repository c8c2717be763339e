"""WeightLoRA (WeightLoRA paper §3.3; official code: WeightAdamW).

    h_i = W0_i x + ω_i · s · B_i A_i dropout(x),     min_{‖ω‖₀ ≤ K} min_{A,B} L

Steps 1..T: AdamW on A/B (and the head), plain SGD on ω with ``lr_w`` followed by the top-K
projection (skipped while ∇ω = 0). After step T: ω is frozen (folded into each survivor's scale)
and the n − K adapters with ω_i = 0 are physically removed — parameters, gradients and optimizer
state — so training continues with exactly K · r · (d_in + d_out) adapter parameters. (The
official code keeps zeroed adapters in the graph and saves no memory.)

Hooks: ``before_optimizer_step`` (gate SGD + projection, steps ≤ T), ``after_optimizer_step``
(selection at step T), ``on_train_begin`` (selection when T = 0).
"""

from __future__ import annotations

from torch import nn

from wlora.core.selection import GatedSelection
from wlora.methods.weightlora.config import WeightLoRAConfig


class WeightLoRAController(GatedSelection):
    slug = "weightlora"

    def __init__(self, model: nn.Module, config: WeightLoRAConfig):
        super().__init__(model, config, stages=1)
