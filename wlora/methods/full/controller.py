"""Full fine-tuning: ``W ← W − η·AdamW(∇_W L)`` for every weight of the model (reference row).

No adapter is injected; every parameter (embeddings, encoder, task head) is trainable and owned by
the Engine's AdamW. Export saves the whole model with ``save_pretrained``
(:func:`wlora.export.export_method`); there is no PEFT adapter to write.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from wlora.core.controller import Controller
from wlora.methods.full.config import FullConfig


class FullController(Controller):
    slug = "full"
    export_kind = "full_model"

    def __init__(self, model: nn.Module, config: FullConfig):
        super().__init__(model, config, inject=False)
        for p in model.parameters():
            p.requires_grad_(True)

    def export_factors(self) -> dict:
        return {}

    def report(self) -> dict[str, Any]:
        out = super().report()
        out["trainable_params"] = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return out
