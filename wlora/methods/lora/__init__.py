"""The `lora` method: its config and controller (imported on first use)."""

from wlora.lazy import lazy_exports

__all__ = ["LoRAConfig", "LoRAController"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "LoRAConfig": "wlora.methods.lora.config",
        "LoRAController": "wlora.methods.lora.controller",
    },
)
