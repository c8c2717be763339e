"""LoRA-drop config (Zhou et al., "LoRA-drop: Efficient LoRA Parameter Pruning based on Output Evaluation")."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from wlora.core.config import AdapterConfig, check_run_field, is_int, require_run_field, require_valid


@dataclass(frozen=True)
class LoRADropConfig(AdapterConfig):
    """LoRA's fields plus the importance evaluation and the selection threshold.

    The importance phase is the first ``importance_steps = importance_epochs · ⌈sample_ratio ·
    steps_per_epoch⌉`` optimizer steps of the run, with its own learning-rate schedule, before the
    task run's full budget (see the controller docstring).
    """

    threshold: float = field(
        default=0.9,
        metadata={"help": "T: keep the most important modules until their cumulative importance reaches T, in (0, 1]."},
    )
    sample_ratio: float = field(
        default=0.1,
        metadata={
            "help": "α: fraction of the training set the importance evaluation trains on, in (0, 1] (paper 10%)."
        },
    )
    importance_epochs: int = field(
        default=3, metadata={"help": "Passes over the sample in the importance evaluation (paper A.1: 3 epochs)."}
    )
    steps_per_epoch: int | None = field(
        default=None,
        metadata={
            "help": (
                "Optimizer steps in one epoch of the full training set (required to build the method;"
                " the training runner fills it in)."
            )
        },
    )
    share: bool = field(
        default=True,
        metadata={
            "help": 'Non-kept modules share ONE LoRA per module type (paper); False drops them (ablation "w/o share").'
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        th = self.threshold
        require_valid(isinstance(th, int | float) and 0.0 < th <= 1.0, f"`threshold` must be in (0, 1], got {th!r}")
        sr = self.sample_ratio
        require_valid(isinstance(sr, int | float) and 0.0 < sr <= 1.0, f"`sample_ratio` must be in (0, 1], got {sr!r}")
        ep = self.importance_epochs
        require_valid(is_int(ep) and ep > 0, f"`importance_epochs` must be a positive integer, got {ep!r}")
        check_run_field(self, "steps_per_epoch")
        require_valid(isinstance(self.share, bool), f"`share` must be a bool, got {self.share!r}")

    @property
    def sample_steps(self) -> int:
        """Optimizer steps in one pass over the α-sample: ⌈α · steps_per_epoch⌉ (at least 1)."""
        steps_per_epoch = require_run_field(self, "steps_per_epoch")
        return max(1, math.ceil(self.sample_ratio * steps_per_epoch - 1e-9))

    @property
    def importance_steps(self) -> int:
        """Length of the importance phase: ``importance_epochs`` passes over the sample."""
        return self.importance_epochs * self.sample_steps
