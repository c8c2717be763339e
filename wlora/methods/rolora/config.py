"""ROLoRA config (ROLoRA paper, Algorithm 1; sparsifier: AdaLoRA's importance-based pruning)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from wlora.core.config import AdapterConfig, check_run_field, is_int, require_run_field, require_valid


@dataclass(frozen=True)
class RoLoRAConfig(AdapterConfig):
    """ROLoRA. `r` is the target average rank R: the budget Σ r_i ≤ n·R holds at every step.

    The run's ``total_steps`` optimizer steps are split into `iterations` (T) outer iterations of
    near-equal length; each one is an AdaLoRA-style SPARSIFY run whose own warm-up / final phases are
    the fractions `tinit_frac` / `tfinal_frac` of the iteration (see the controller docstring).
    """

    iterations: int = field(
        default=3,
        metadata={"help": "T: outer iterations (sparsify → rescale → Frank-Wolfe step → extend); paper T = 3."},
    )
    total_steps: int | None = field(
        default=None,
        metadata={
            "help": "Optimizer steps of the whole run (required to build the method; the training runner fills it in)."
        },
    )
    tinit_frac: float = field(
        default=0.1, metadata={"help": "Fraction of each iteration trained before pruning starts (AdaLoRA's t_i)."}
    )
    tfinal_frac: float = field(
        default=0.2, metadata={"help": "Fraction of each iteration trained with the final mask fixed (AdaLoRA's t_f)."}
    )
    delta_t: int = field(
        default=1, metadata={"help": "Prune every `delta_t` steps during the budget decay (AdaLoRA's ΔT)."}
    )
    beta1: float = field(default=0.85, metadata={"help": "EMA coefficient of the sensitivity smoothing (AdaLoRA β1)."})
    beta2: float = field(default=0.85, metadata={"help": "EMA coefficient of the uncertainty (AdaLoRA β2)."})
    sparsify_start: float = field(
        default=0.5,
        metadata={
            "help": (
                "μ_1 / R: the first SPARSIFY prunes to an average rank of `sparsify_start`·R (paper: "
                "R/2); after iteration t the target average grows by the factor (1 + 1/(T + t))."
            )
        },
    )
    score: str = field(
        default="triplet",
        metadata={
            "help": (
                'Importance of gate entry j: "triplet" = AdaLoRA\'s s(g_j) + mean s(A_j·) + mean '
                's(B_·j) (eq. 10 of the AdaLoRA paper), "gate" = s(g_j) only; s = smoothed |w·∇w| × '
                "its uncertainty."
            )
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        T = self.iterations
        require_valid(is_int(T) and T > 0, f"`iterations` (T) must be a positive integer, got {T!r}")
        check_run_field(self, "total_steps")
        ts = self.total_steps
        for f in ("tinit_frac", "tfinal_frac"):
            v = getattr(self, f)
            require_valid(isinstance(v, int | float) and 0.0 <= v < 1.0, f"`{f}` must be in [0, 1), got {v!r}")
        require_valid(
            is_int(self.delta_t) and self.delta_t > 0, f"`delta_t` must be a positive integer, got {self.delta_t!r}"
        )
        for f in ("beta1", "beta2"):
            v = getattr(self, f)
            require_valid(isinstance(v, int | float) and 0.0 < v < 1.0, f"`{f}` must be in (0, 1), got {v!r}")
        require_valid(
            isinstance(self.sparsify_start, int | float) and 0.0 < self.sparsify_start <= 1.0,
            f"`sparsify_start` must be in (0, 1], got {self.sparsify_start!r}",
        )
        require_valid(self.score in ("triplet", "gate"), f"`score` must be 'triplet' or 'gate', got {self.score!r}")
        require_valid(
            ts is None or ts >= T,
            f"`total_steps`={ts} is too short for `iterations`={T}: every outer iteration needs at least one step",
        )
        # floor(a·L) + floor(b·L) < L for a + b < 1: every iteration keeps at least one pruning step.
        require_valid(
            self.tinit_frac + self.tfinal_frac < 1.0,
            f"`tinit_frac` + `tfinal_frac` must be < 1 so each outer iteration has a pruning phase, got "
            f"{self.tinit_frac} + {self.tfinal_frac}",
        )

    def phase_lengths(self, length: int) -> tuple[int, int]:
        """(t_init, t_final) in steps for an outer iteration of ``length`` steps."""
        return math.floor(self.tinit_frac * length), math.floor(self.tfinal_frac * length)

    def iteration_ends(self) -> list[int]:
        """Global step at which each outer iteration t = 1..T ends (the last one at ``total_steps``)."""
        total = require_run_field(self, "total_steps")
        return [(t * total) // self.iterations for t in range(1, self.iterations + 1)]
