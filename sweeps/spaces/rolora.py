"""ROLoRA: average rank R (the budget is n·R) and the number of sparsify/extend iterations T."""

from ray import tune

from sweeps.spaces.common import COMMON

SPACE = {
    **COMMON,
    "r": tune.choice([1, 2, 4, 8, 16]),
    "iterations": tune.choice([2, 3, 4]),
}
