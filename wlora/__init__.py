"""wlora: adaptive LoRA methods (WeightLoRA, WeightLoRA+, random selection, LoRA) for Hugging Face models.

A pure torch / transformers / peft library: it never imports ray or mlflow.
"""

from wlora.registry import METHODS, build_method, get_method, make_config

__all__ = ["METHODS", "build_method", "get_method", "make_config"]
__version__ = "0.1.0"
