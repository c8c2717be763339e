"""Task data: GLUE / SQuAD / XSum readers (local folders or the hub), tokenization and task metrics.

Names are imported on first use.
"""

from wlora.lazy import lazy_exports

_HOMES = {
    "GLUE_TASKS": "wlora.data.glue",
    "GlueExample": "wlora.data.glue",
    "GlueTask": "wlora.data.glue",
    "get_task": "wlora.data.glue",
    "read_glue_split": "wlora.data.glue",
    "MAIN_METRIC": "wlora.data.metrics",
    "glue_metrics": "wlora.data.metrics",
    "rouge_metrics": "wlora.data.metrics",
    "squad_metrics": "wlora.data.metrics",
}

__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
