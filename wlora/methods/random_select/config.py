"""Random-selection ablation config (WeightLoRA paper §4.4, "RLoRA")."""

from __future__ import annotations

from dataclasses import dataclass, field

from wlora.core.config import KSelectionConfig, is_int, require_valid


@dataclass(frozen=True)
class RandomSelectConfig(KSelectionConfig):
    """LoRA's fields plus `k` / `k_fraction`, the selection step `t` and the seed of the draw."""

    t: int = field(
        default=100,
        metadata={
            "help": (
                "T: optimizer steps all n adapters train before a random K survive (WeightLoRA's T and "
                "default); 0 = draw before the first step (the official code's ``use_rand``)."
            )
        },
    )
    selection_seed: int | None = field(
        default=None, metadata={"help": "Seed of the uniform draw of K adapters; None = drawn from the run's seed."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require_valid(is_int(self.t) and self.t >= 0, f"`t` must be an integer >= 0, got {self.t!r}")
        require_valid(
            self.selection_seed is None or (isinstance(self.selection_seed, int) and self.selection_seed >= 0),
            f"`selection_seed` must be None or an integer >= 0, got {self.selection_seed!r}",
        )
