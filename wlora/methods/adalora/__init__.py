"""The `adalora` method: its config and controller (imported on first use)."""

from wlora.lazy import lazy_exports

__all__ = ["AdaLoRAConfig", "AdaLoRAController"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "AdaLoRAConfig": "wlora.methods.adalora.config",
        "AdaLoRAController": "wlora.methods.adalora.controller",
    },
)
