"""The `lora_drop` method: its config and controller (imported on first use)."""

from wlora.lazy import lazy_exports

__all__ = ["LoRADropConfig", "LoRADropController", "keep_prefix", "module_type"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "LoRADropConfig": "wlora.methods.lora_drop.config",
        "LoRADropController": "wlora.methods.lora_drop.controller",
        "keep_prefix": "wlora.methods.lora_drop.controller",
        "module_type": "wlora.methods.lora_drop.controller",
    },
)
