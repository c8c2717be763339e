"""The `rolora` method: its config and controller (imported on first use)."""

from wlora.lazy import lazy_exports

__all__ = ["RankGatedLoRALinear", "RoLoRAConfig", "RoLoRAController"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "RankGatedLoRALinear": "wlora.methods.rolora.layer",
        "RoLoRAConfig": "wlora.methods.rolora.config",
        "RoLoRAController": "wlora.methods.rolora.controller",
    },
)
