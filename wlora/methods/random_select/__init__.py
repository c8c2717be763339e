"""The `random_select` method: its config and controller (imported on first use)."""

from wlora.lazy import lazy_exports

__all__ = ["RandomSelectConfig", "RandomSelectController"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "RandomSelectConfig": "wlora.methods.random_select.config",
        "RandomSelectController": "wlora.methods.random_select.controller",
    },
)
