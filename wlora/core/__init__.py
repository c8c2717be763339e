"""Adapter layer, injection by name pattern, optimizer surgery, accounting, controller base."""

from wlora.core.accounting import count_parameters, saved_for_backward_bytes
from wlora.core.config import AdapterConfig, GateConfig, KSelectionConfig
from wlora.core.controller import Controller
from wlora.core.inject import FAMILY_TARGETS, find_targets, inject_adapters
from wlora.core.layer import LoRALinear
from wlora.core.optim import optimizer_state_bytes

__all__ = [
    "FAMILY_TARGETS",
    "AdapterConfig",
    "Controller",
    "GateConfig",
    "KSelectionConfig",
    "LoRALinear",
    "count_parameters",
    "find_targets",
    "inject_adapters",
    "optimizer_state_bytes",
    "saved_for_backward_bytes",
]
