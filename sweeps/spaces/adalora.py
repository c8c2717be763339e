"""AdaLoRA (peft): target rank r (init_r defaults to ⌈1.5·r⌉) and the budget schedule tinit/tfinal/ΔT."""

from ray import tune

from sweeps.spaces.common import ADAPTER

SPACE = {
    **ADAPTER,
    "tinit": tune.choice([0, 10, 50]),
    "tfinal": tune.choice([0, 10, 50]),
    "delta_t": tune.choice([1, 5, 10]),
}
