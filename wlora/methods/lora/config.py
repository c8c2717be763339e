"""LoRA config (Hu et al., 2021): ``h = W0 x + (α/r) · B A dropout(x)`` on every target module."""

from __future__ import annotations

from dataclasses import dataclass

from wlora.core.config import AdapterConfig


@dataclass(frozen=True)
class LoRAConfig(AdapterConfig):
    """Plain LoRA; fields as :class:`~wlora.core.config.AdapterConfig` (peft's ``LoraConfig`` names)."""
