"""slug → (config class, controller class). The only place that lists the methods.

The slug is the folder name under ``wlora/methods``, the ``--method`` value, the search-space module
name and the MLflow ``method`` tag.

Run fields: some configs need numbers only the training runner knows (AdaLoRA and ROLoRA the run's
``total_steps``; LoRA-drop the ``steps_per_epoch`` its importance phase is measured in). They are
ordinary config fields named as in :data:`RUN_FIELDS`, listed per method in ``MethodSpec.run_fields``;
the runner fills them in by name where the user left them unset. A config may leave them None (so it
validates before the run is sized); building the method then raises a ``ValueError`` naming them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from wlora.core.config import MethodConfig
from wlora.core.controller import Controller
from wlora.methods.adalora import AdaLoRAConfig, AdaLoRAController
from wlora.methods.full import FullConfig, FullController
from wlora.methods.lora import LoRAConfig, LoRAController
from wlora.methods.lora_drop import LoRADropConfig, LoRADropController
from wlora.methods.random_select import RandomSelectConfig, RandomSelectController
from wlora.methods.rolora import RoLoRAConfig, RoLoRAController
from wlora.methods.weightlora import WeightLoRAConfig, WeightLoRAController
from wlora.methods.weightlora_plus import WeightLoRAPlusConfig, WeightLoRAPlusController

#: Config fields the training runner fills in: field name → what it means.
RUN_FIELDS: dict[str, str] = {
    "total_steps": "optimizer steps of the whole run (the Engine's total_steps)",
    "steps_per_epoch": "optimizer steps in one epoch of the full training set",
}


@dataclass(frozen=True)
class MethodSpec:
    slug: str
    config_cls: type[MethodConfig]
    controller_cls: type[Controller]
    summary: str
    run_fields: tuple[str, ...] = ()


METHODS: dict[str, MethodSpec] = {
    spec.slug: spec
    for spec in (
        MethodSpec("lora", LoRAConfig, LoRAController, "LoRA on every target module"),
        MethodSpec("weightlora", WeightLoRAConfig, WeightLoRAController, "learned gates, keep the top-K adapters"),
        MethodSpec(
            "weightlora_plus",
            WeightLoRAPlusConfig,
            WeightLoRAPlusController,
            "WeightLoRA, then grow the K survivors' ranks to LoRA's budget",
        ),
        MethodSpec(
            "random_select",
            RandomSelectConfig,
            RandomSelectController,
            "K adapters chosen at random (ablation)",
        ),
        MethodSpec(
            "lora_drop",
            LoRADropConfig,
            LoRADropController,
            "LoRA on the modules with the largest output norm, one shared LoRA per type for the rest",
            run_fields=("steps_per_epoch",),
        ),
        MethodSpec(
            "rolora",
            RoLoRAConfig,
            RoLoRAController,
            "ranks re-allocated by sparsify / rescale / Frank-Wolfe / extend within Σ r_i ≤ n·R",
            run_fields=("total_steps",),
        ),
        MethodSpec(
            "adalora",
            AdaLoRAConfig,
            AdaLoRAController,
            "peft's AdaLoRA: SVD-form adapters pruned from init_r to r by importance",
            run_fields=("total_steps",),
        ),
        MethodSpec("full", FullConfig, FullController, "full fine-tuning (all weights trainable)"),
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
