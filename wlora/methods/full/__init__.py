"""The `full` method: its config and controller (imported on first use)."""

from wlora.lazy import lazy_exports

__all__ = ["FullConfig", "FullController"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "FullConfig": "wlora.methods.full.config",
        "FullController": "wlora.methods.full.controller",
    },
)
