"""AdaLoRA config (Zhang et al., 2023), run through peft's ``AdaLoraConfig`` / ``AdaLoraModel``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from wlora.core.config import AdapterConfig, check_run_field, is_int, require_run_field, require_valid


@dataclass(frozen=True)
class AdaLoRAConfig(AdapterConfig):
    """AdaLoRA. `r` is the target average rank (peft ``target_r``); the other fields are peft's.

    peft's schedule over the run's ``total_steps`` steps: ranks stay at `init_r` for steps ≤ `tinit`,
    the rank budget decays cubically to n·r until step ``total_steps − tfinal``, then the final mask is
    fixed for the last `tfinal` steps.

    Defaults: `tinit` / `tfinal` as fractions of the run's steps, from the AdaLoRA/ROLoRA GLUE settings
    (ROLoRA Tables 8–9, DeBERTaV3-base; steps = ⌈train size / batch⌉ · epochs). On the small tasks,
    the ones a short run resembles, t_i / total = 0.17 (MRPC), 0.09 (CoLA), 0.15 (RTE), 0.13 (STS-B)
    and t_f / total = 0.52, 0.52, 0.46, 0.44; the large tasks use smaller fractions (SST-2 0.005 /
    0.17, QNLI 0.012 / 0.049, MNLI 0.013 / 0.081, QQP 0.014 / 0.044). Hence `tinit_frac` = 0.1
    and `tfinal_frac` = 0.5: the budget decays over the middle 40 % of the run and the allocation
    is final for its second half. ``tinit = tfinal = 0`` would fix the allocation only at the last step.
    """

    init_r: int | None = field(
        default=None,
        metadata={
            "help": "Initial rank of every module; None = ⌈1.5·r⌉ (AdaLoRA paper's recommendation, as in ROLoRA §6)."
        },
    )
    tinit: int | None = field(
        default=None,
        metadata={
            "help": (
                "Steps of initial fine-tuning before any pruning (peft ``tinit``); None = ⌊`tinit_frac` · total_steps⌋."
            )
        },
    )
    tfinal: int | None = field(
        default=None,
        metadata={
            "help": (
                "Steps of final fine-tuning with the mask fixed (peft ``tfinal``); None = ⌊`tfinal_frac` · "
                "total_steps⌋, shortened if needed to leave at least one budgeting step."
            )
        },
    )
    tinit_frac: float = field(
        default=0.1, metadata={"help": "`tinit` as a fraction of the run's steps when `tinit` is None, in [0, 1)."}
    )
    tfinal_frac: float = field(
        default=0.5, metadata={"help": "`tfinal` as a fraction of the run's steps when `tfinal` is None, in [0, 1)."}
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
        check_run_field(self, "total_steps")
        ts = self.total_steps
        if self.init_r is not None:
            require_valid(
                is_int(self.init_r) and self.init_r >= self.r,
                f"`init_r` must be an integer >= r={self.r}, got {self.init_r!r}",
            )
        for f in ("tinit", "tfinal"):
            v = getattr(self, f)
            require_valid(v is None or (is_int(v) and v >= 0), f"`{f}` must be None or an integer >= 0, got {v!r}")
        for f in ("tinit_frac", "tfinal_frac"):
            v = getattr(self, f)
            require_valid(isinstance(v, int | float) and 0.0 <= v < 1.0, f"`{f}` must be in [0, 1), got {v!r}")
        require_valid(
            self.tinit_frac + self.tfinal_frac < 1.0,
            f"`tinit_frac` + `tfinal_frac` must be < 1 to leave a budgeting phase, got "
            f"{self.tinit_frac} + {self.tfinal_frac}",
        )
        if ts is not None:
            ti, tf = self.resolved_tinit, self.resolved_tfinal
            require_valid(
                ti < ts - tf,
                f"`tinit`={ti} and `tfinal`={tf} leave no budgeting phase in total_steps={ts} "
                f"steps: need tinit < total_steps − tfinal",
            )
        require_valid(
            is_int(self.delta_t) and self.delta_t > 0, f"`delta_t` must be a positive integer, got {self.delta_t!r}"
        )
        for f in ("beta1", "beta2"):
            v = getattr(self, f)
            require_valid(isinstance(v, int | float) and 0.0 < v < 1.0, f"`{f}` must be in (0, 1), got {v!r}")
        w = self.orth_reg_weight
        require_valid(isinstance(w, int | float) and w >= 0, f"`orth_reg_weight` must be >= 0, got {w!r}")

    @property
    def resolved_tinit(self) -> int:
        """`tinit`, or ⌊`tinit_frac` · total_steps⌋."""
        if self.tinit is not None:
            return self.tinit
        return math.floor(self.tinit_frac * require_run_field(self, "total_steps"))

    @property
    def resolved_tfinal(self) -> int:
        """`tfinal`, or ⌊`tfinal_frac` · total_steps⌋ capped so that tinit < total_steps − tfinal."""
        if self.tfinal is not None:
            return self.tfinal
        ts = require_run_field(self, "total_steps")
        return max(0, min(math.floor(self.tfinal_frac * ts), ts - self.resolved_tinit - 1))

    @property
    def resolved_init_r(self) -> int:
        return self.init_r if self.init_r is not None else math.ceil(1.5 * self.r)
