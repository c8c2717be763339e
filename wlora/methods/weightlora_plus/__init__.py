"""The `weightlora_plus` method: its config and controller (imported on first use)."""

from wlora.lazy import lazy_exports

__all__ = ["WeightLoRAPlusConfig", "WeightLoRAPlusController"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "WeightLoRAPlusConfig": "wlora.methods.weightlora_plus.config",
        "WeightLoRAPlusController": "wlora.methods.weightlora_plus.controller",
    },
)
