from wlora.methods.weightlora.config import WeightLoRAConfig
from wlora.methods.weightlora.controller import WeightLoRAController

__all__ = ["WeightLoRAConfig", "WeightLoRAController"]
