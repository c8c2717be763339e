"""Random selection ablation (RLoRA): K and the selection step T, searched exactly as WeightLoRA's."""

from sweeps.spaces.common import ADAPTER
from sweeps.spaces.weightlora import SPACE as WEIGHTLORA

SPACE = {**ADAPTER, "k_fraction": WEIGHTLORA["k_fraction"], "t": WEIGHTLORA["t"]}
