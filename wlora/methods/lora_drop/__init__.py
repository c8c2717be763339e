from wlora.methods.lora_drop.config import LoRADropConfig
from wlora.methods.lora_drop.controller import LoRADropController, keep_prefix, module_type

__all__ = ["LoRADropConfig", "LoRADropController", "keep_prefix", "module_type"]
