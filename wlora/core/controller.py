"""The base class of every method: owns the adapters and the hooks the training loop calls.

Hook order for one optimizer step (the contract ``wlora.train`` follows; cf. peft's RankAllocator,
"call after loss.backward() and before zero_grad()")::

    loss.backward()
    (gradient clipping)
    controller.before_optimizer_step(step, lr_scale)   # e.g. WeightLoRA's gate SGD + top-K
    optimizer.step(); scheduler.step()
    controller.after_optimizer_step(step, optimizer)   # e.g. remove adapters, grow ranks
    model.zero_grad(set_to_none=True)

``step`` is the 1-based index of the optimizer step being taken. ``on_train_begin(optimizer)`` is
called once the optimizer exists (fresh or resumed run) and must be idempotent.
On an fp16 step whose gradients overflow, the Engine skips ``before_optimizer_step`` together with
``optimizer.step()`` (the gradients it would read are inf/NaN); ``after_optimizer_step`` still runs,
so step-scheduled events (selection at T) keep their step, and sees zeroed gradients.

Resuming: ``state_dict()`` holds everything the method changed (structure, gates, counters, RNG).
On a freshly built model, call ``load_state_dict`` *first*: it re-applies the structure (removed
adapters, grown ranks, folded gates), then the model weights and a fresh optimizer's state load
with matching shapes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from wlora.core.config import MethodConfig
from wlora.core.inject import find_targets, freeze_base, head_module_names, inject_adapters, remove_adapter
from wlora.core.layer import LoRALinear
from wlora.core.optim import remove_params


class Controller:
    """Injects adapters into ``model`` (in place) and drives the method during training.

    Subclasses set ``slug`` and ``uses_gates`` (and ``layer_cls`` for their own adapter layer) and
    override the hooks they need. A method that builds its adapters itself (peft's AdaLoRA) or has
    none (full fine-tuning) passes ``inject=False``: ``layers`` starts empty and nothing is frozen.
    """

    slug: ClassVar[str] = ""
    uses_gates: ClassVar[bool] = False
    #: The adapter layer class :func:`~wlora.core.inject.inject_adapters` wraps targets in.
    layer_cls: ClassVar[type[LoRALinear]] = LoRALinear
    #: How ``wlora.export.export_method`` saves the result: "peft_lora" (a PEFT LoRA adapter built
    #: from :meth:`export_factors`) or "full_model" (``save_pretrained`` of the whole model).
    export_kind: ClassVar[str] = "peft_lora"

    def __init__(self, model: nn.Module, config: MethodConfig, *, inject: bool = True):
        self.model = model
        self.config = config
        #: The n originally targeted module names, in model order (fixed for the run); none for a
        #: config without ``target_modules`` (full fine-tuning).
        self.target_names: list[str] = (
            find_targets(model, config.target_modules) if hasattr(config, "target_modules") else []
        )
        self.head_names: list[str] = head_module_names(model, getattr(config, "head_modules", None))
        self.layers: dict[str, LoRALinear] = {}
        if inject:
            self.layers = inject_adapters(
                model,
                self.target_names,
                r=config.r,
                alpha=config.alpha,
                dropout=config.dropout,
                gate=self.uses_gates,
                layer_cls=self.layer_cls,
            )
            freeze_base(model, self.head_names)
        # A private RNG for any randomness a method needs mid-run (growth init, random selection),
        # seeded from the global RNG so the run seed decides it; its state is checkpointed.
        self.generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), device="cpu").item()))

    # ----- sizes -----

    @property
    def forward_model(self) -> nn.Module:
        """The module the training loop calls for the loss (``forward_model(**batch).loss``).

        ``self.model`` for every method except peft-wrapped ones (AdaLoRA: its ``AdaLoraModel``, whose
        forward adds the orthogonal regulariser). Weights and checkpoints always go through ``self.model``.
        """
        return self.model

    @property
    def n_adapters(self) -> int:
        """n: adapters originally injected."""
        return len(self.target_names)

    @property
    def active_adapters(self) -> list[str]:
        return list(self.layers)

    def adapter_param_count(self) -> int:
        return sum(layer.adapter_numel() for layer in self.layers.values())

    def kept_adapters(self) -> dict[str, int]:
        """The adapters that currently train parameters of their own, with their (non-zero) ranks (what
        :class:`~wlora.core.stability.SelectionTracker` watches; methods that select override it)."""
        return {n: int(layer.r) for n, layer in self.layers.items() if layer.r > 0}

    # ----- optimizer -----

    def self_managed_params(self) -> list[nn.Parameter]:
        """Trainable tensors the method updates itself (kept out of the AdamW optimizer)."""
        return [layer.gate for layer in self.layers.values() if layer.gate is not None]

    def optimizer_params(self) -> list[nn.Parameter]:
        """The trainable parameters the AdamW optimizer should own, in a stable order."""
        skip = {id(p) for p in self.self_managed_params()}
        return [p for p in self.model.parameters() if p.requires_grad and id(p) not in skip]

    # ----- hooks (no-ops by default) -----

    def on_train_begin(self, optimizer: torch.optim.Optimizer) -> None:
        """Called once the optimizer exists; must be idempotent."""

    def before_optimizer_step(self, step: int, lr_scale: float = 1.0) -> None:
        """After backward (and clipping), before ``optimizer.step()``. ``lr_scale`` = current lr / base lr."""

    def after_optimizer_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        """After ``optimizer.step()`` / ``scheduler.step()``, before ``zero_grad()``."""

    # ----- structural edits shared by the adaptive methods -----

    def remove_adapters(self, names: list[str], optimizer: torch.optim.Optimizer | None = None) -> None:
        """Physically remove adapters: module back to its base linear, params and optimizer state gone."""
        for name in names:
            layer = self.layers.pop(name)
            params = layer.adapter_parameters()
            if optimizer is not None:
                remove_params(optimizer, params)
            for p in params:
                p.grad = None
            remove_adapter(self.model, name)

    # ----- export -----

    def export_factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
        """Per module ``(A, B', c)`` with ``ΔW x = c · B' A x``: what a PEFT LoRA export must reproduce.

        Modules missing from the dict get no adapter in the export (their ΔW is zero or removed).
        """
        return {name: layer.effective_factors() for name, layer in self.layers.items()}

    # ----- state -----

    def structure_state(self) -> dict[str, dict[str, Any]]:
        return {
            name: {"r": layer.r, "scaling": layer.scaling, "gate": layer.gate is not None}
            for name, layer in self.layers.items()
        }

    def restore_structure(self, structure: dict[str, dict[str, Any]]) -> None:
        """Re-apply a saved structure on a freshly built controller (before weights are loaded)."""
        gone = [n for n in self.layers if n not in structure]
        unknown = [n for n in structure if n not in self.layers]
        if unknown:
            raise ValueError(f"checkpoint has adapters this model does not: {unknown[:5]}")
        self.remove_adapters(gone)
        for name, s in structure.items():
            layer = self.layers[name]
            if not s["gate"]:
                layer.drop_gate(fold=False)
            layer.set_rank_(int(s["r"]))
            layer.scaling = float(s["scaling"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "structure": self.structure_state(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("slug") != self.slug:
            raise ValueError(f"checkpoint is for method {state.get('slug')!r}, not {self.slug!r}")
        self.restore_structure(state["structure"])
        self.generator.set_state(state["generator"])

    # ----- reporting -----

    def metrics(self) -> dict[str, float]:
        """Per-run numbers logged at every evaluation (e.g. when and how clearly a selection was decided)."""
        return {}

    def report(self) -> dict[str, Any]:
        """What every method reports: active adapters, per-module ranks, the selection."""
        return {
            "method": self.slug,
            "n_adapters": self.n_adapters,
            "active_adapters": len(self.layers),
            "adapter_params": self.adapter_param_count(),
            "ranks": {n: layer.r for n, layer in self.layers.items()},
        }
