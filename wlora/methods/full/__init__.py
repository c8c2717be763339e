from wlora.methods.full.config import FullConfig
from wlora.methods.full.controller import FullController

__all__ = ["FullConfig", "FullController"]
