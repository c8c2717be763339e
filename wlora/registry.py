"""slug → (config class, controller class). The only place that lists the methods.

The slug is the folder name under ``wlora/methods``, the ``--method`` value, the search-space module
name and the MLflow ``method`` tag.

Run fields: some configs need numbers only the training runner knows (AdaLoRA and ROLoRA the run's
``total_steps``; LoRA-drop the ``steps_per_epoch`` its importance phase is measured in). They are
ordinary config fields named as in :data:`RUN_FIELDS` (``MethodSpec.run_fields``: the ones its config
class declares); the runner fills them in by name where the user left them unset. A config may leave them None (so it
validates before the run is sized); building the method then raises a ``ValueError`` naming them.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wlora.core.config import MethodConfig

if TYPE_CHECKING:
    from torch import nn

    from wlora.core.controller import Controller

#: Config fields the training runner fills in: field name → what it means.
RUN_FIELDS: dict[str, str] = {
    "total_steps": "optimizer steps of the whole run (the Engine's total_steps)",
    "steps_per_epoch": "optimizer steps in one epoch of the full training set",
}


@dataclass(frozen=True)
class MethodSpec:
    """One method. Its classes are named ``"module:Class"`` and imported on first use: the config
    classes load without torch (so the command line answers at once), the controllers with it."""

    slug: str
    config_ref: str
    controller_ref: str
    summary: str
    label: str = ""
    """Name in tables and plots (the papers' spelling); the slug when empty."""
    table_order: int = 0
    """Row position in result tables: the papers' order, references first, proposed methods last."""
    keeps_k: bool = False
    """Keeps K of the n adapters (a table row label gives K)."""
    selection_fields: tuple[str, ...] = ()
    """Fields of ``Controller.report()`` that show the selection (first present one colours a heatmap)."""
    selects_ranks: bool = False
    """Its kept set is a rank per module (ROLoRA, AdaLoRA), not a set of adapters."""

    @property
    def config_cls(self) -> type[MethodConfig]:
        return _load(self.config_ref)

    @property
    def run_fields(self) -> tuple[str, ...]:
        """The :data:`RUN_FIELDS` its config declares (the runner fills them in where left unset)."""
        declared = {f.name for f in dataclasses.fields(self.config_cls)}
        return tuple(name for name in RUN_FIELDS if name in declared)

    @property
    def controller_cls(self) -> type[Controller]:
        return _load(self.controller_ref)


def _load(ref: str) -> type:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _refs(slug: str, config: str, controller: str) -> tuple[str, str]:
    return f"wlora.methods.{slug}.config:{config}", f"wlora.methods.{slug}.controller:{controller}"


METHODS: dict[str, MethodSpec] = {
    spec.slug: spec
    for spec in (
        MethodSpec(
            "lora",
            *_refs("lora", "LoRAConfig", "LoRAController"),
            "LoRA on every target module",
            label="LoRA",
            table_order=1,
        ),
        MethodSpec(
            "weightlora",
            *_refs("weightlora", "WeightLoRAConfig", "WeightLoRAController"),
            "learned gates, keep the top-K adapters",
            label="WeightLoRA",
            table_order=6,
            keeps_k=True,
            selection_fields=("selection_scores", "gates"),
        ),
        MethodSpec(
            "weightlora_informed",
            *_refs("weightlora_informed", "WeightLoRAInformedConfig", "WeightLoRAInformedController"),
            "ablation: WeightLoRA whose gates train densely for T steps before the one top-K projection",
            label="WeightLoRA (informed selection)",
            table_order=8,
            keeps_k=True,
            selection_fields=("selection_scores", "gates"),
        ),
        MethodSpec(
            "weightlora_plus",
            *_refs("weightlora_plus", "WeightLoRAPlusConfig", "WeightLoRAPlusController"),
            "WeightLoRA, then grow the K survivors' ranks to LoRA's budget",
            label="WeightLoRA+",
            table_order=7,
            keeps_k=True,
            selection_fields=("selection_scores", "gates"),
        ),
        MethodSpec(
            "random_select",
            *_refs("random_select", "RandomSelectConfig", "RandomSelectController"),
            "RLoRA ablation: all n adapters train for T steps, then a seeded random K survive",
            label="Random select (RLoRA)",
            table_order=5,
            keeps_k=True,
            selection_fields=("ranks",),
        ),
        MethodSpec(
            "lora_drop",
            *_refs("lora_drop", "LoRADropConfig", "LoRADropController"),
            "LoRA on the modules with the largest output norm, one shared LoRA per type for the rest",
            label="LoRA-drop",
            table_order=3,
            selection_fields=("importance", "ranks"),
        ),
        MethodSpec(
            "rolora",
            *_refs("rolora", "RoLoRAConfig", "RoLoRAController"),
            "ranks re-allocated by sparsify / rescale / Frank-Wolfe / extend within Σ r_i ≤ n·R",
            label="ROLoRA",
            table_order=4,
            selection_fields=("ranks",),
            selects_ranks=True,
        ),
        MethodSpec(
            "adalora",
            *_refs("adalora", "AdaLoRAConfig", "AdaLoRAController"),
            "peft's AdaLoRA: SVD-form adapters pruned from init_r to r by importance",
            label="AdaLoRA",
            table_order=2,
            selection_fields=("ranks",),
            selects_ranks=True,
        ),
        MethodSpec(
            "full",
            *_refs("full", "FullConfig", "FullController"),
            "full fine-tuning (all weights trainable)",
            label="Full FT",
            table_order=0,
        ),
    )
}


def get_method(slug: str) -> MethodSpec:
    try:
        return METHODS[slug]
    except KeyError:
        raise ValueError(f"unknown method {slug!r}; choose one of {sorted(METHODS)}") from None


def make_config(slug: str, values: Mapping[str, Any] | MethodConfig | None = None) -> MethodConfig:
    """The validated config of ``slug`` from a dict (unknown keys raise) or a config instance."""
    spec = get_method(slug)
    if isinstance(values, MethodConfig):
        if not isinstance(values, spec.config_cls):
            raise ValueError(f"method {slug!r} takes {spec.config_cls.__name__}, got {type(values).__name__}")
        return values
    return spec.config_cls.from_dict(values or {})


def build_method(slug: str, model: nn.Module, config: Mapping[str, Any] | MethodConfig | None = None) -> Controller:
    """Inject ``slug``'s adapters into ``model`` (in place) and return its controller."""
    spec = get_method(slug)
    return spec.controller_cls(model, make_config(slug, config))
