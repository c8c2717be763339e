from wlora.methods.weightlora_plus.config import WeightLoRAPlusConfig
from wlora.methods.weightlora_plus.controller import WeightLoRAPlusController

__all__ = ["WeightLoRAPlusConfig", "WeightLoRAPlusController"]
