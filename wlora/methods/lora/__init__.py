from wlora.methods.lora.config import LoRAConfig
from wlora.methods.lora.controller import LoRAController

__all__ = ["LoRAConfig", "LoRAController"]
