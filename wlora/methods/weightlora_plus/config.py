"""WeightLoRA+ config (WeightLoRA paper §3.4; official code: FatAdamW)."""

from __future__ import annotations

from dataclasses import dataclass, field

from wlora.core.config import GROWTH_INITS, GateConfig, require_valid


@dataclass(frozen=True)
class WeightLoRAPlusConfig(GateConfig):
    """WeightLoRA's fields plus the growth options."""

    init: str = field(
        default="random",
        metadata={
            "help": (
                'Initialisation of the grown block: "random" (A rows like LoRA\'s A, B columns 0; '
                'official code) or "qr" (B = QR, new B columns orthogonal to the old ones; paper\'s '
                "second variant)."
            )
        },
    )
    stages: int = field(
        default=1,
        metadata={
            "help": (
                "Selection stages S ≥ 1: stage s keeps K·2^(S−s) adapters at step s·T and grows them "
                "to the budget, so each later stage halves K and doubles r (official multi-stage "
                "schedule)."
            )
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()

        require_valid(self.init in GROWTH_INITS, f"`init` must be one of {list(GROWTH_INITS)}, got {self.init!r}")
        require_valid(
            isinstance(self.stages, int) and not isinstance(self.stages, bool) and self.stages >= 1,
            f"`stages` must be an integer >= 1, got {self.stages!r}",
        )
