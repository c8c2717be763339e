"""Full fine-tuning config: no fields (every weight trains; the run's lr/schedule live in the Engine)."""

from __future__ import annotations

from dataclasses import dataclass

from wlora.core.config import MethodConfig


@dataclass(frozen=True)
class FullConfig(MethodConfig):
    """Full fine-tuning (the papers' "Full-FT" reference row). No adapter fields; unknown keys raise."""
