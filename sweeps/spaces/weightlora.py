"""WeightLoRA: K (as a fraction of n, so one space fits any model), T gate-training steps, gate lr."""

from ray import tune

from sweeps.spaces.common import ADAPTER

SPACE = {
    **ADAPTER,
    "k_fraction": tune.choice([0.1, 0.25, 0.5]),
    "t": tune.choice([10, 25, 50, 100]),
    "lr_w": tune.loguniform(0.1, 10.0),
}
