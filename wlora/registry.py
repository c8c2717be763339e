"""slug → (config class, controller class). The only place that lists the methods.

The slug is the folder name under ``wlora/methods``, the ``--method`` value, the search-space module
name and the MLflow ``method`` tag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from wlora.core.config import AdapterConfig
from wlora.core.controller import Controller
from wlora.methods.lora import LoRAConfig, LoRAController
from wlora.methods.random_select import RandomSelectConfig, RandomSelectController
from wlora.methods.weightlora import WeightLoRAConfig, WeightLoRAController
from wlora.methods.weightlora_plus import WeightLoRAPlusConfig, WeightLoRAPlusController


@dataclass(frozen=True)
class MethodSpec:
    slug: str
    config_cls: type[AdapterConfig]
    controller_cls: type[Controller]
    summary: str


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
    )
}


def get_method(slug: str) -> MethodSpec:
    try:
        return METHODS[slug]
    except KeyError:
        raise ValueError(f"unknown method {slug!r}; choose one of {sorted(METHODS)}") from None


def make_config(slug: str, values: Mapping[str, Any] | AdapterConfig | None = None) -> AdapterConfig:
    """The validated config of ``slug`` from a dict (unknown keys raise) or a config instance."""
    spec = get_method(slug)
    if isinstance(values, AdapterConfig):
        if not isinstance(values, spec.config_cls):
            raise ValueError(f"method {slug!r} takes {spec.config_cls.__name__}, got {type(values).__name__}")
        return values
    return spec.config_cls.from_dict(values or {})


def build_method(slug: str, model: nn.Module, config: Mapping[str, Any] | AdapterConfig | None = None) -> Controller:
    """Inject ``slug``'s adapters into ``model`` (in place) and return its controller."""
    spec = get_method(slug)
    return spec.controller_cls(model, make_config(slug, config))
