"""AdaLoRA config (Zhang et al., 2023), run through peft's ``AdaLoraConfig`` / ``AdaLoraModel``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from wlora.core.config import AdapterConfig, _check_run_field, _is_int, _require


@dataclass(frozen=True)
class AdaLoRAConfig(AdapterConfig):
    """AdaLoRA. `r` is the target average rank (peft ``target_r``); the other fields are peft's.

    peft's schedule over the run's ``total_steps`` steps: ranks stay at `init_r` for steps ≤ `tinit`,
    the rank budget decays cubically to n·r until step ``total_steps − tfinal``, then the final mask is
    fixed for the last `tfinal` steps.
    """

    init_r: int | None = field(
        default=None,
        metadata={
            "help": "Initial rank of every module; None = ⌈1.5·r⌉ (AdaLoRA paper's recommendation, as in ROLoRA §6)."
        },
    )
    tinit: int = field(
        default=0, metadata={"help": "Steps of initial fine-tuning before any pruning (peft ``tinit``)."}
    )
    tfinal: int = field(
        default=0, metadata={"help": "Steps of final fine-tuning with the mask fixed (peft ``tfinal``)."}
    )
    delta_t: int = field(
        default=1, metadata={"help": "Prune every `delta_t` steps during the budget decay (peft ``deltaT``)."}
    )
    beta1: float = field(
        default=0.85, metadata={"help": "EMA coefficient of the sensitivity smoothing (peft ``beta1``)."}
    )
    beta2: float = field(default=0.85, metadata={"help": "EMA coefficient of the uncertainty (peft ``beta2``)."})
    orth_reg_weight: float = field(
        default=0.5,
        metadata={"help": "Coefficient of the orthogonal regulariser on P (B) and Q (A) (peft ``orth_reg_weight``)."},
    )
    total_steps: int | None = field(
        default=None,
        metadata={
            "help": (
                "Optimizer steps of the whole run (peft's ``total_step``; required to build the "
                "method — the training runner fills it in)."
            )
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_run_field(self, "total_steps")
        ts = self.total_steps
        if self.init_r is not None:
            _require(
                _is_int(self.init_r) and self.init_r >= self.r,
                f"`init_r` must be an integer >= r={self.r}, got {self.init_r!r}",
            )
        for f in ("tinit", "tfinal"):
            v = getattr(self, f)
            _require(_is_int(v) and v >= 0, f"`{f}` must be an integer >= 0, got {v!r}")
        _require(
            ts is None or self.tinit < ts - self.tfinal,
            f"`tinit`={self.tinit} and `tfinal`={self.tfinal} leave no budgeting phase in total_steps={ts} "
            f"steps: need tinit < total_steps − tfinal",
        )
        _require(
            _is_int(self.delta_t) and self.delta_t > 0, f"`delta_t` must be a positive integer, got {self.delta_t!r}"
        )
        for f in ("beta1", "beta2"):
            v = getattr(self, f)
            _require(isinstance(v, int | float) and 0.0 < v < 1.0, f"`{f}` must be in (0, 1), got {v!r}")
        w = self.orth_reg_weight
        _require(isinstance(w, int | float) and w >= 0, f"`orth_reg_weight` must be >= 0, got {w!r}")

    @property
    def resolved_init_r(self) -> int:
        return self.init_r if self.init_r is not None else math.ceil(1.5 * self.r)
