"""The ``Task`` protocol: how one input row becomes engine work and how the engine's answer becomes the row's output.

Every task kind answers three calls, and both backends (the diffusion worker and vLLM's preparer) use only these:

- ``plan(row) -> Plan | RowError``: pure. Reads the row's text and the task's extra columns, checks them and lays
  out what the engine must do, as a typed value (``PromptPlan``, ``RewritePlan``, ``EditJob``). A bad row is a
  ``RowError`` value, never an exception. Planning needs no engine, so it runs (and can be re-run) anywhere.
- ``execute(engine, plans, params, seeds) -> list[Result | RowError]``: one answer per plan, in order. Token-level
  checks (a prompt too long for the model, a span that cannot fit) turn that row into a ``RowError`` and leave the
  others running; a failing engine call raises (the worker then retries row by row).
- ``render(plan, result) -> str``: the row's ``output`` value.

Adding a kind means subclassing ``Task``, decorating it with ``@register`` and building it from the job config in
``pipelines/convert.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..engine import GenerationResult

TASKS: dict[str, type["Task"]] = {}

Result = GenerationResult  # what ``execute`` answers for a row that generated
DEFAULT_MAX_INPUT_CHARS = 20_000


def register(cls: type["Task"]) -> type["Task"]:
    TASKS[cls.kind] = cls
    return cls


@dataclass(frozen=True)
class Row:
    """One input row as a task sees it: its id, its text (``None`` when null or not read), the task's extra input
    columns by name, and ``error``: a problem found while reading it (an unparseable line), which wins."""

    id: str = ""
    text: Any = None
    columns: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class RowError:
    """Why a row has no output: the message of its ``status='error'`` row."""

    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class PromptPlan:
    """A row of ``generate`` or ``structured``: the prompt text, sent as is or (``chat``) as a user turn."""

    prompt: str
    chat: bool = False


def text_problem(text, max_input_chars: int) -> str | None:
    """Why a row's text cannot be used (the message of its error row), or None. Every task and both backends use
    it, so a bad row reads the same whichever engine the job runs."""
    if text is None:
        return "text is null"
    if not isinstance(text, str):
        return f"text is a {type(text).__name__}, not a string"
    if not text.strip():
        return "text is empty"
    if len(text) > max_input_chars:
        return f"text has {len(text)} characters; task.max_input_chars is {max_input_chars}"
    return None


def as_row(row) -> Row:
    """A ``Row`` from a ``Row`` or a mapping with ``text`` (and optionally ``id``, ``columns``, ``error``)."""
    if isinstance(row, Row):
        return row
    if isinstance(row, Mapping):
        return Row(str(row.get("id", "")), row.get("text"), row.get("columns") or {}, row.get("error"))
    raise TypeError(f"a row is an engine.tasks.Row or a mapping with 'text', not {type(row).__name__}")


class Task:
    """Base task (``generate``): the prompt is the text, sent as is (``chat=False``) or as a user turn."""

    kind: ClassVar[str] = ""
    chat: ClassVar[bool] = False
    reads_text: bool = True  # False: the text column is not read (infill from prefix/suffix columns)
    max_input_chars: int = DEFAULT_MAX_INPUT_CHARS  # longer text is an error row (task.max_input_chars)

    def extra_columns(self) -> dict[str, str]:
        """Input columns read besides the text, keyed by the config field that names each (for error messages)."""
        return {}

    # ------------------------------------------------------------------------------------------- the protocol
    def plan(self, row) -> Any:
        """The row's plan, or a ``RowError`` naming what is wrong with it. Pure: no engine, nothing mutated."""
        row = as_row(row)
        if row.error:
            return RowError(row.error)
        if self.reads_text:
            problem = text_problem(row.text, self.max_input_chars)
            if problem is not None:
                return RowError(problem)
        try:
            return self.plan_row(row)
        except ValueError as err:
            return RowError(str(err))

    def execute(self, engine, plans: list, params, seeds: list[int]) -> list:
        """One ``Result`` or ``RowError`` per plan: rows whose prompt does not fit are errors, the rest generate
        together in one engine call."""
        answers: list = [self._fits(engine, p) for p in plans]
        todo = [i for i, a in enumerate(answers) if a is None]
        if todo:
            results = engine.generate([plans[i].prompt for i in todo], params, chat=self.chat,
                                      seeds=[seeds[i] for i in todo])
            _check_count(results, todo)
            for i, res in zip(todo, results):
                answers[i] = res
        return answers

    def render(self, plan, result) -> str:
        """The row's ``output`` value."""
        return result.text

    # ------------------------------------------------------------------------------------------- per kind
    def plan_row(self, row: Row) -> Any:
        """The plan of a row whose text passed the checks; raise ``ValueError`` to reject the row."""
        return PromptPlan(self.prepare(row.text), self.chat)

    def prepare(self, text: str) -> str:
        """The prompt for one row's text."""
        return text

    def count_tokens(self, engine, plan) -> int:
        """Tokens the engine will see for this plan (checked against ``engine.max_prompt_tokens``); raise
        ``ValueError`` when the row cannot fit for another reason."""
        text = engine.apply_chat_template([{"role": "user", "content": plan.prompt}]) if plan.chat else plan.prompt
        return len(engine.tokenizer.encode(text))

    def _fits(self, engine, plan) -> RowError | None:
        """``None`` when the plan's prompt fits the model, else the row's error (a ``RowError`` given as a plan
        stays the row's answer, so ``execute`` takes ``plan``'s output as it is)."""
        if isinstance(plan, RowError):
            return plan
        n = guarded(lambda: self.count_tokens(engine, plan))
        return n if isinstance(n, RowError) else too_long(engine, n)

    def whole_prompt(self, plan) -> tuple[str, bool]:
        """``(prompt, chat)``: the one prompt an autoregressive backend (vLLM) sends for this plan."""
        if isinstance(plan, PromptPlan):
            return plan.prompt, plan.chat
        raise ValueError(f"task.kind {self.kind!r} has no single-prompt form")

    def describe(self) -> dict:
        return {"kind": self.kind}


def guarded(fn):
    """``fn()``, or the row's ``RowError`` when it raises: a ``ValueError`` is the row's problem as stated, anything
    else a failure of the tokenizer on this row."""
    try:
        return fn()
    except ValueError as err:
        return RowError(str(err))
    except Exception as err:  # noqa: BLE001 - a tokenizer failure is this row's problem
        return RowError(f"cannot tokenize the prompt: {type(err).__name__}: {err}")


def too_long(engine, n: int) -> RowError | None:
    """The error of a row whose prompt has ``n`` tokens, when that is more than the model takes."""
    limit = engine.max_prompt_tokens
    return RowError(f"prompt has {n} tokens; the model takes at most {limit}") if n > limit else None


def _check_count(results, todo) -> None:
    if len(results) != len(todo):
        raise RuntimeError(f"engine answered {len(results)} of {len(todo)} prompts")


@register
class GenerateTask(Task):
    """The text is a prompt; the output continues it."""

    kind = "generate"
