"""Full fine-tuning (reference row): lr and warm-up only."""

from sweeps.spaces.common import COMMON

SPACE = dict(COMMON)

RANK_KEY = None  # no adapter rank: `--ranks` does not apply
