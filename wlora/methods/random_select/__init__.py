from wlora.methods.random_select.config import RandomSelectConfig
from wlora.methods.random_select.controller import RandomSelectController

__all__ = ["RandomSelectConfig", "RandomSelectController"]
