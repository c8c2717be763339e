"""wlora: adaptive LoRA methods (WeightLoRA, WeightLoRA+, random selection, LoRA) for Hugging Face models.

A pure torch / transformers / peft library: it never imports ray or mlflow. Its public names are
imported on first use, so ``import wlora`` (and ``python -m wlora.train --help``) loads no torch.
"""

from wlora.lazy import lazy_exports

_HOMES = {
    "METHODS": "wlora.registry",
    "build_method": "wlora.registry",
    "get_method": "wlora.registry",
    "make_config": "wlora.registry",
}

__all__ = sorted(_HOMES)
__version__ = "0.1.0"
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
