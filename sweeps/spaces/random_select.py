"""Random selection ablation: K only (no gates to train)."""

from ray import tune

from sweeps.spaces.common import ADAPTER

SPACE = {**ADAPTER, "k_fraction": tune.choice([0.1, 0.25, 0.5])}
