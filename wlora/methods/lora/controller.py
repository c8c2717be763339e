"""LoRA baseline: adapters on all n targets, nothing adaptive. Numerically equal to peft's LoRA."""

from __future__ import annotations

from wlora.core.controller import Controller


class LoRAController(Controller):
    """``h = W0 x + (α/r) · B (A dropout(x))``; no hooks."""

    slug = "lora"
