"""Task data: GLUE readers (local GLUE-layout folders) and task metrics."""

from wlora.data.glue import GLUE_TASKS, GlueExample, GlueTask, get_task, read_glue_split
from wlora.data.metrics import MAIN_METRIC, glue_metrics, rouge_metrics, squad_metrics

__all__ = [
    "GLUE_TASKS",
    "MAIN_METRIC",
    "GlueExample",
    "GlueTask",
    "get_task",
    "glue_metrics",
    "read_glue_split",
    "rouge_metrics",
    "squad_metrics",
]
