"""WeightLoRA with an informed selection: WeightLoRA's space (T and lr_w now change which adapters survive)."""

from sweeps.spaces.weightlora import SPACE as WEIGHTLORA

SPACE = dict(WEIGHTLORA)
