"""``task.kind: infill`` and ``edit``: a row is an ``EditJob`` whose holes run on clamped canvases
(``engine/tasks/editing.py``); the kinds differ in where the holes come from."""

from __future__ import annotations

import math

from .base import Task, register
from .editing import EditJob, Hole, check_fits, parse_spans, plan_holes, run_edit_jobs, spans_from_markers, split_hole


def _prompt_head(engine, instruction: str | None) -> list[int]:
    """BOS, or the instruction as a user turn with the model's turn opened: the document follows as its reply."""
    if instruction is None:
        return engine.tokenizer.encode("")
    return engine.tokenizer.encode(engine.apply_chat_template([{"role": "user", "content": instruction}]))


class _CanvasEditTask(Task):
    """Infill and edit: a row is an ``EditJob`` whose holes run on clamped canvases (``run_edit_jobs``); the
    kinds differ in where the holes come from (``plan``)."""

    instruction: str | None
    context_tokens: int

    def plan(self, engine, job: EditJob) -> None:
        """Set ``job.holes`` (each hole's span and token budget)."""
        raise NotImplementedError

    def prompt_tokens(self, engine, job: EditJob) -> int:
        job.prompt_head = _prompt_head(engine, self.instruction)
        self.plan(engine, job)
        check_fits(job, engine.canvas_length, engine.config.max_position_embeddings)
        return len(job.prompt_head)

    def generate(self, engine, jobs: list[EditJob], params, seeds: list[int]):
        return run_edit_jobs(engine, jobs, params, seeds, self.context_tokens)


@register
class InfillTask(_CanvasEditTask):
    """Fill the hole between a prefix and a suffix (two columns, or the text with a hole marker). The output is the
    fill only, so prefix + output + suffix is the document; positions of the ``fill_tokens`` budget the model
    leaves unused (end-of-sequence, padding) are dropped."""

    kind = "infill"

    def __init__(self, infill_input: str = "columns", prefix_column: str = "prefix", suffix_column: str = "suffix",
                 hole_marker: str = "<|fill|>", fill_tokens: int = 64, instruction: str | None = None,
                 context_tokens: int = 1024, max_input_chars: int = 1_000_000):
        self.reads_text = infill_input == "marker"
        self.prefix_column, self.suffix_column, self.hole_marker = prefix_column, suffix_column, hole_marker
        self.fill_tokens, self.instruction, self.context_tokens = fill_tokens, instruction, context_tokens
        self.max_input_chars = max_input_chars

    def extra_columns(self) -> dict[str, str]:
        if self.reads_text:
            return {}
        return {"task.prefix_column": self.prefix_column, "task.suffix_column": self.suffix_column}

    def prepare_row(self, text: str | None, columns: dict) -> EditJob:
        if self.reads_text:
            prefix, suffix = split_hole(text, self.hole_marker)
        else:
            prefix, suffix = columns.get(self.prefix_column), columns.get(self.suffix_column)
            for name, value in ((self.prefix_column, prefix), (self.suffix_column, suffix)):
                if not isinstance(value, str):
                    raise ValueError(f"column {name!r} is null" if value is None else
                                     f"column {name!r} is not a string (got {type(value).__name__})")
        return self.job_for(prefix, suffix)

    def job_for(self, prefix: str, suffix: str) -> EditJob:
        """The job of one hole between ``prefix`` and ``suffix`` (Serve's completions with a suffix build it
        directly, without a row)."""
        if len(prefix) + len(suffix) > self.max_input_chars:
            raise ValueError(f"prefix and suffix have {len(prefix) + len(suffix)} characters; "
                             f"task.max_input_chars is {self.max_input_chars}")
        return EditJob(prefix + suffix, [(len(prefix), len(prefix))], fill_only=True)

    def plan(self, engine, job: EditJob) -> None:
        job.holes = [Hole(job.spans[0][0], job.spans[0][1], self.fill_tokens)]

    def describe(self) -> dict:
        return {"kind": self.kind, "fill_tokens": self.fill_tokens}


@register
class EditTask(_CanvasEditTask):
    """Rewrite only the given spans of the document (a spans column of ``[start, end)`` character offsets, or
    spans marked in the text); the output is the whole document, every character outside the spans unchanged.

    A span's budget is ``ceil(its tokens * edit_token_ratio) + edit_extra_tokens`` (``insert_tokens`` for an empty
    span); positions the model leaves unused are dropped, so a replacement may be shorter than its span.
    """

    kind = "edit"

    def __init__(self, spans_column: str = "spans", span_markers: list[str] | None = None,
                 instruction: str | None = None, edit_token_ratio: float = 1.5, edit_extra_tokens: int = 8,
                 insert_tokens: int = 16, window_tokens: int = 256, context_tokens: int = 1024,
                 max_span_tokens: int | None = None):
        self.spans_column, self.span_markers, self.instruction = spans_column, span_markers, instruction
        self.max_span_tokens = max_span_tokens  # a cap on every hole's budget (Serve's max_tokens); None: none
        self.edit_token_ratio, self.edit_extra_tokens = edit_token_ratio, edit_extra_tokens
        self.insert_tokens, self.window_tokens, self.context_tokens = insert_tokens, window_tokens, context_tokens

    def extra_columns(self) -> dict[str, str]:
        return {} if self.span_markers else {"task.spans_column": self.spans_column}

    def prepare_row(self, text: str | None, columns: dict) -> EditJob:
        if self.span_markers:
            return EditJob(*spans_from_markers(text, *self.span_markers))
        return EditJob(text, parse_spans(columns.get(self.spans_column), len(text)))

    def budget(self, span_tokens: int) -> int:
        """Free positions for a span of ``span_tokens`` tokens (0: an insertion point)."""
        budget = self.insert_tokens if span_tokens == 0 else \
            math.ceil(span_tokens * self.edit_token_ratio) + self.edit_extra_tokens
        return budget if self.max_span_tokens is None else min(budget, self.max_span_tokens)

    def plan(self, engine, job: EditJob) -> None:
        plan_holes(engine.tokenizer, job, self.budget, self.window_tokens)

    def describe(self) -> dict:
        return {"kind": self.kind, "instruction": self.instruction}
