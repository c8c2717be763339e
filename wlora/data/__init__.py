"""Task data: GLUE readers (local GLUE-layout folders)."""

from wlora.data.glue import GLUE_TASKS, GlueExample, GlueTask, get_task, read_glue_split

__all__ = ["GLUE_TASKS", "GlueExample", "GlueTask", "get_task", "read_glue_split"]
