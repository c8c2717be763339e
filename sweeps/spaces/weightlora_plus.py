"""WeightLoRA+: WeightLoRA's space plus the growth initialisation."""

from ray import tune

from sweeps.spaces.weightlora import SPACE as _WEIGHTLORA

SPACE = {**_WEIGHTLORA, "init": tune.choice(["random", "qr"])}
