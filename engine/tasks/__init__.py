"""Row planning: how a row becomes engine work and how the engine's answer becomes the row's output.

No Ray and no pydantic here: tasks are plain, picklable objects built from the job config by
``pipelines/convert.py``. Every kind answers ``plan(row)``, ``execute(engine, plans, params, seeds)`` and
``render(plan, result)`` (``engine/tasks/base.py``). ``TASKS`` maps each ``task.kind`` to its class.
"""

from .base import TASKS, GenerateTask, PromptPlan, Result, Row, RowError, Task, register, text_problem
from .canvas import EditTask, InfillTask
from .editing import EditJob, Hole
from .rewrite import RewritePlan, RewriteTask
from .schema_subset import SchemaError, Widths
from .structured import StructuredTask

__all__ = ["TASKS", "Task", "register", "Row", "RowError", "PromptPlan", "Result", "text_problem",
           "GenerateTask", "RewriteTask", "RewritePlan", "InfillTask", "EditTask", "EditJob", "Hole",
           "StructuredTask", "SchemaError", "Widths"]
