"""The `weightlora` method: its config and controller (imported on first use)."""

from wlora.lazy import lazy_exports

__all__ = ["WeightLoRAConfig", "WeightLoRAController"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "WeightLoRAConfig": "wlora.methods.weightlora.config",
        "WeightLoRAController": "wlora.methods.weightlora.controller",
    },
)
