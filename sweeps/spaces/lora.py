"""LoRA: lr, warm-up, rank."""

from sweeps.spaces.common import ADAPTER

SPACE = dict(ADAPTER)
