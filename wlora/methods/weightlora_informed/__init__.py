"""The `weightlora_informed` method: WeightLoRA with the selection-rule ablation on (imported on first use)."""

from wlora.lazy import lazy_exports

__all__ = ["WeightLoRAInformedConfig", "WeightLoRAInformedController"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "WeightLoRAInformedConfig": "wlora.methods.weightlora_informed.config",
        "WeightLoRAInformedController": "wlora.methods.weightlora_informed.controller",
    },
)
