"""WeightLoRA config (WeightLoRA paper §3.3): K, T, lr_w, topk_by on top of LoRA's fields."""

from __future__ import annotations

from dataclasses import dataclass

from wlora.core.config import GateConfig


@dataclass(frozen=True)
class WeightLoRAConfig(GateConfig):
    """WeightLoRA. Fields: LoRA's (`r`, `alpha`, `dropout`, `target_modules`, `head_modules`) plus
    `k` / `k_fraction` (adapters kept), `t` (gate-training steps T), `lr_w`, `topk_by`,
    `lr_w_scheduled` — see :class:`~wlora.core.config.GateConfig`.

    With ``t = 0`` no gate is ever trained and the K kept adapters are the first K in model order.
    """
