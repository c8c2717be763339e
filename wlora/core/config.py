"""Frozen, validated config dataclasses shared by the methods.

Every field is checked in ``__post_init__``; errors name the field and the value. ``from_dict``
rejects unknown keys, so a typo in a sweep or CLI config never passes silently.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self


def require_valid(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


#: How WeightLoRA+ initialises the grown rank components (``wlora.core.growth``).
GROWTH_INITS = ("random", "qr")


@dataclass(frozen=True)
class MethodConfig:
    """Base of every method config: ``from_dict`` (unknown keys raise) and ``to_dict``.

    Methods without adapters (``full``) derive from this directly; the LoRA-style ones from
    :class:`AdapterConfig`.
    """

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Self:
        """Build from a plain dict (CLI / Tune); unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; valid fields: {sorted(names)}")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_run_field(config: Any, name: str) -> None:
    """A run field (filled in by the training runner, see ``wlora.registry.RUN_FIELDS``) may be None
    until the run is sized; otherwise it must be a positive integer."""
    v = getattr(config, name)
    require_valid(
        v is None or (is_int(v) and v > 0),
        f"`{name}` must be a positive integer (or None until the training runner fills it in), got {v!r}",
    )


def require_run_field(config: Any, name: str) -> int:
    """The value of a run field; ``ValueError`` naming it when it was never filled in."""
    v = getattr(config, name)
    require_valid(
        v is not None,
        f"{type(config).__name__} needs `{name}` (the training runner fills it in from the run's schedule); got None",
    )
    return v


@dataclass(frozen=True)
class AdapterConfig(MethodConfig):
    """Fields every LoRA-style method shares (peft names where peft has one)."""

    r: int = field(default=8, metadata={"help": "Adapter rank (> 0)."})
    alpha: float = field(
        default=32.0, metadata={"help": "LoRA α; the adapter scale is α / r (paper default 32, never tuned)."}
    )
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the adapter input, in [0, 1)."})
    target_modules: str | tuple[str, ...] | None = field(
        default=None,
        metadata={
            "help": (
                "Module-name patterns (peft semantics): names (a module matches if its name ends with one), "
                "a regex string, 'all-linear', or None = the family default (for an architecture not in the "
                "family table: its attention query/key/value projections)."
            )
        },
    )
    head_modules: tuple[str, ...] | None = field(
        default=None,
        metadata={
            "help": "Task-head modules kept fully trainable; None = auto-detect (see ``wlora.core.inject.HEAD_NAMES``)."
        },
    )

    def __post_init__(self) -> None:
        for f in ("target_modules", "head_modules"):
            v = getattr(self, f)
            if isinstance(v, list):
                object.__setattr__(self, f, tuple(v))
        require_valid(
            isinstance(self.r, int) and not isinstance(self.r, bool) and self.r > 0,
            f"`r` must be a positive integer, got {self.r!r}",
        )
        require_valid(
            isinstance(self.alpha, int | float) and math.isfinite(self.alpha) and self.alpha > 0,
            f"`alpha` must be a positive number, got {self.alpha!r}",
        )
        require_valid(0.0 <= self.dropout < 1.0, f"`dropout` must be in [0, 1), got {self.dropout!r}")
        tm = self.target_modules
        require_valid(
            tm is None or isinstance(tm, str) or (len(tm) > 0 and all(isinstance(t, str) for t in tm)),
            f"`target_modules` must be None, a string or a non-empty list of names, got {tm!r}",
        )


@dataclass(frozen=True)
class KSelectionConfig(AdapterConfig):
    """An adapter config that keeps K of the n adapters (WeightLoRA, WeightLoRA+, random selection)."""

    k: int | None = field(
        default=None, metadata={"help": "Adapters to keep, in [1, n]. Mutually exclusive with `k_fraction`."}
    )
    k_fraction: float | None = field(
        default=None,
        metadata={"help": "Keep round(k_fraction · n) adapters (at least 1); used when `k` is None. Default 0.25."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k is not None:
            require_valid(
                isinstance(self.k, int) and not isinstance(self.k, bool) and self.k > 0,
                f"`k` must be a positive integer, got {self.k!r}",
            )
            require_valid(
                self.k_fraction is None,
                f"set only one of `k` and `k_fraction`, got k={self.k!r}, k_fraction={self.k_fraction!r}",
            )
        if self.k_fraction is not None:
            require_valid(0.0 < self.k_fraction <= 1.0, f"`k_fraction` must be in (0, 1], got {self.k_fraction!r}")

    def resolve_k(self, n_adapters: int) -> int:
        """K for a model with ``n_adapters`` adapters; raises if it falls outside [1, n]."""
        if self.k is not None:
            k = self.k
        else:
            frac = 0.25 if self.k_fraction is None else self.k_fraction
            k = max(1, round(frac * n_adapters))
        require_valid(1 <= k <= n_adapters, f"`k` must be in [1, n_adapters={n_adapters}], got {k}")
        return k


@dataclass(frozen=True)
class GateConfig(KSelectionConfig):
    """Gate training by StoIHT (WeightLoRA §3.3): shared by WeightLoRA and WeightLoRA+."""

    t: int = field(
        default=100,
        metadata={
            "help": "T: optimizer steps of gate training before the n − K zero-gated adapters are removed (≥ 0)."
        },
    )
    lr_w: float = field(
        default=5.0, metadata={"help": "Learning rate of the plain SGD step on the gates ω (official default 5.0)."}
    )
    topk_by: str = field(
        default="abs",
        metadata={
            "help": 'Projection keeps the K largest |ω| ("abs", default) or the K largest signed ω ("value", official).'
        },
    )
    lr_w_scheduled: bool = field(
        default=True,
        metadata={
            "help": "Scale `lr_w` by the run's warm-up/decay multiplier, as when ω shares the scheduled optimizer."
        },
    )

    projection_start: int | None = field(
        default=0,
        metadata={
            "help": "Ablation (not in the paper): ω trains by dense SGD, without the top-K projection, for optimizer "
            "steps < projection_start, then StoIHT as usual; 0 = the paper's StoIHT from the first step; None = "
            "no projection before the selection at T."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require_valid(
            isinstance(self.t, int) and not isinstance(self.t, bool) and self.t >= 0,
            f"`t` must be an integer >= 0, got {self.t!r}",
        )
        require_valid(
            self.projection_start is None
            or (
                isinstance(self.projection_start, int)
                and not isinstance(self.projection_start, bool)
                and self.projection_start >= 0
            ),
            f"`projection_start` must be an integer >= 0 or None (= T), got {self.projection_start!r}",
        )
        require_valid(
            isinstance(self.lr_w, int | float) and math.isfinite(self.lr_w) and self.lr_w > 0,
            f"`lr_w` must be a positive number, got {self.lr_w!r}",
        )
        require_valid(self.topk_by in ("abs", "value"), f"`topk_by` must be 'abs' or 'value', got {self.topk_by!r}")
