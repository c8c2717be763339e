"""Random-selection ablation config (WeightLoRA paper §4.4, "RLoRA")."""

from __future__ import annotations

from dataclasses import dataclass, field

from wlora.core.config import KSelectionConfig, _require


@dataclass(frozen=True)
class RandomSelectConfig(KSelectionConfig):
    """LoRA's fields plus `k` / `k_fraction` and the seed of the draw."""

    selection_seed: int | None = field(
        default=None, metadata={"help": "Seed of the uniform draw of K adapters; None = drawn from the run's seed."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(
            self.selection_seed is None or (isinstance(self.selection_seed, int) and self.selection_seed >= 0),
            f"`selection_seed` must be None or an integer >= 0, got {self.selection_seed!r}",
        )
