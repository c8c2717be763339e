"""LoRA-drop: cumulative-importance threshold and the sample used to estimate importance."""

from ray import tune

from sweeps.spaces.common import ADAPTER

SPACE = {
    **ADAPTER,
    "threshold": tune.uniform(0.7, 0.99),
    "sample_ratio": tune.choice([0.05, 0.1, 0.2]),
}
