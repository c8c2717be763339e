"""WeightLoRA with an informed selection (an ablation, not in the paper): WeightLoRA's fields, with
``projection_start`` defaulting to None, i.e. ω trains by dense SGD through all T gate-training steps and the
top-K projection happens once, at selection."""

from __future__ import annotations

from dataclasses import dataclass, field

from wlora.methods.weightlora.config import WeightLoRAConfig


@dataclass(frozen=True)
class WeightLoRAInformedConfig(WeightLoRAConfig):
    """WeightLoRA whose gates see every gate-training batch before the first projection.

    The paper's StoIHT projects from the first step whose gate gradient is non-zero, so one mini-batch decides
    the kept set and T / lr_w never change it. Here the projection waits until ``projection_start`` (None = T):
    the kept set is the top-K of gates trained on T batches, and T and lr_w change which adapters survive.
    """

    projection_start: int | None = field(
        default=None,
        metadata={"help": "Dense SGD on ω for optimizer steps < projection_start, then StoIHT; None = until T."},
    )
