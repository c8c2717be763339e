from wlora.methods.rolora.config import RoLoRAConfig
from wlora.methods.rolora.controller import RoLoRAController
from wlora.methods.rolora.layer import RankGatedLoRALinear

__all__ = ["RankGatedLoRALinear", "RoLoRAConfig", "RoLoRAController"]
