"""Adapter layer, injection by name pattern, optimizer surgery, accounting, controller base.

Names are imported on first use, so the config classes (``wlora.core.config``) load without torch.
"""

from wlora.lazy import lazy_exports

_HOMES = {
    "FAMILY_TARGETS": "wlora.core.inject",
    "AdapterConfig": "wlora.core.config",
    "Controller": "wlora.core.controller",
    "GateConfig": "wlora.core.config",
    "KSelectionConfig": "wlora.core.config",
    "LoRALinear": "wlora.core.layer",
    "count_parameters": "wlora.core.accounting",
    "find_targets": "wlora.core.inject",
    "inject_adapters": "wlora.core.inject",
    "optimizer_state_bytes": "wlora.core.optim",
    "saved_for_backward_bytes": "wlora.core.accounting",
}

__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
