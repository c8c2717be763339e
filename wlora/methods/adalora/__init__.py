from wlora.methods.adalora.config import AdaLoRAConfig
from wlora.methods.adalora.controller import AdaLoRAController

__all__ = ["AdaLoRAConfig", "AdaLoRAController"]
