"""Task kinds: how a row's text becomes an engine call and how the result becomes the row's output.

A task is a small picklable object the worker calls for every row; adding a kind (``infill``, ``edit``,
``structured`` are planned) means subclassing ``Task``, decorating it with ``@register``, and adding the kind to
``TaskConfig.kind``. The worker only uses the four methods below, so a task may call a different engine entry
point (e.g. infill) by overriding ``generate``.
"""

from __future__ import annotations

from typing import ClassVar

from .config import TaskConfig

TASKS: dict[str, type["Task"]] = {}


def register(cls: type["Task"]) -> type["Task"]:
    TASKS[cls.kind] = cls
    return cls


class Task:
    """Base task: the prompt is the text, sent as is (``chat=False``) or as a user turn (``chat=True``)."""

    kind: ClassVar[str] = ""
    chat: ClassVar[bool] = False

    @classmethod
    def from_config(cls, cfg: TaskConfig) -> "Task":
        return cls()

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


@register
class RewriteTask(Task):
    """The instruction, with the document in place of ``{text}``, goes through the chat template; the reply
    (trimmed) replaces the document."""

    kind = "rewrite"
    chat = True

    def __init__(self, instruction: str):
        if instruction.count("{text}") != 1:
            raise ValueError("task.instruction: must contain '{text}' exactly once")
        self.instruction = instruction

    @classmethod
    def from_config(cls, cfg: TaskConfig) -> "RewriteTask":
        return cls(cfg.instruction or "")

    def prepare(self, text: str) -> str:
        # str.replace, not str.format: documents and instructions may hold other braces
        return self.instruction.replace("{text}", text)

    def output(self, result) -> str:
        return result.text.strip()

    def describe(self) -> dict:
        return {"kind": self.kind, "instruction": self.instruction}


def build_task(cfg: TaskConfig) -> Task:
    if cfg.kind not in TASKS:
        raise ValueError(f"task.kind: unknown kind {cfg.kind!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[cfg.kind].from_config(cfg)
