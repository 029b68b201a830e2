"""Task kinds: how a row's text becomes an engine call and how the result becomes the row's output.

A task is a small picklable object the worker calls for every row; adding a kind means subclassing ``Task``,
decorating it with ``@register``, and building it from the job config in ``pipelines/convert.py``. The worker only uses the methods
below (``prepare_row``, ``prompt_tokens``, ``generate``, ``output``), so a task may call a different engine entry
point by overriding ``generate``: ``infill`` and ``edit`` use clamped canvases (``engine/tasks/editing.py``), and read
input columns besides the text (``extra_columns``).
"""

from __future__ import annotations

from typing import ClassVar


TASKS: dict[str, type["Task"]] = {}


def register(cls: type["Task"]) -> type["Task"]:
    TASKS[cls.kind] = cls
    return cls


class Task:
    """Base task: the prompt is the text, sent as is (``chat=False``) or as a user turn (``chat=True``)."""

    kind: ClassVar[str] = ""
    chat: ClassVar[bool] = False
    reads_text: bool = True  # False: the worker does not check the text column (infill from prefix/suffix columns)

    def extra_columns(self) -> dict[str, str]:
        """Input columns read besides the text, keyed by the config field that names each (for error messages)."""
        return {}

    def prepare_row(self, text: str | None, columns: dict):
        """The prepared input of one row from its text and its ``extra_columns`` values (by column name).
        Raise ``ValueError`` (with a message for the row) to reject it. Default: ``prepare(text)``."""
        return self.prepare(text)

    def prepare(self, text: str) -> str:
        """The prompt for one row's text. Raise ``ValueError`` (with a message for the row) to reject it."""
        return text

    def prompt_tokens(self, engine, prompt: str) -> int:
        """Tokens the engine will see for this prompt (checked against ``engine.max_prompt_tokens``)."""
        text = engine.apply_chat_template([{"role": "user", "content": prompt}]) if self.chat else prompt
        return len(engine.tokenizer.encode(text))

    def generate(self, engine, prompts: list[str], params, seeds: list[int]):
        """One ``GenerationResult`` per prompt."""
        return engine.generate(prompts, params, chat=self.chat, seeds=seeds)

    def output(self, result) -> str:
        """The row's ``output`` value."""
        return result.text

    def describe(self) -> dict:
        return {"kind": self.kind}


@register
class GenerateTask(Task):
    """The text is a prompt; the output continues it."""

    kind = "generate"
