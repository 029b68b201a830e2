"""Row planning: how a row's text becomes engine calls and how results become the row's output.

No Ray and no pydantic here: tasks are plain, picklable objects built from the job config by
``pipelines/convert.py``. ``TASKS`` maps each ``task.kind`` to its class.
"""

from .base import TASKS, GenerateTask, Task, register
from .canvas import EditTask, InfillTask
from .editing import EditJob, Hole
from .rewrite import RewriteDoc, RewriteTask
from .schema_subset import SchemaError, Widths
from .structured import StructuredTask

__all__ = ["TASKS", "Task", "register", "GenerateTask", "RewriteTask", "RewriteDoc", "InfillTask", "EditTask",
           "EditJob", "Hole", "StructuredTask", "SchemaError", "Widths"]
