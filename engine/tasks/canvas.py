"""``task.kind: infill`` and ``edit``: a row's plan is an ``EditJob`` whose holes run on clamped canvases
(``engine/tasks/editing.py``); the kinds differ in where the holes come from."""

from __future__ import annotations

import dataclasses
import math

from .base import Row, RowError, Task, guarded, register, too_long
from .editing import EditJob, Hole, check_fits, parse_spans, plan_holes, run_edit_jobs, spans_from_markers, split_hole


def _prompt_head(engine, instruction: str | None) -> list[int]:
    """BOS, or the instruction as a user turn with the model's turn opened: the document follows as its reply."""
    if instruction is None:
        return engine.tokenizer.encode("")
    return engine.tokenizer.encode(engine.apply_chat_template([{"role": "user", "content": instruction}]))


class _CanvasEditTask(Task):
    """Infill and edit: a row's plan is an ``EditJob`` (the document and its spans); at run time ``layout`` turns
    it into holes on clamped canvases and ``run_edit_jobs`` runs them. The kinds differ in where the spans come
    from (``plan_row``) and how large each hole is (``holes``)."""

    instruction: str | None
    context_tokens: int

    def holes(self, engine, job: EditJob) -> list[Hole]:
        """Each hole's span and token budget."""
        raise NotImplementedError

    def prompt_head(self, engine) -> list[int]:
        """What starts every window's prompt: BOS, or the instruction as a user turn."""
        return _prompt_head(engine, self.instruction)

    def layout(self, engine, job: EditJob) -> EditJob:
        """The job with its holes and prompt head for ``engine`` (a new value; ``job`` is left as it is). Raises
        ``ValueError`` naming the hole that cannot fit the model's positions."""
        laid = dataclasses.replace(job, prompt_head=self.prompt_head(engine))
        laid.holes = self.holes(engine, laid)
        check_fits(laid, engine.canvas_length, engine.config.max_position_embeddings)
        return laid

    def count_tokens(self, engine, job: EditJob) -> int:
        return len(self.layout(engine, job).prompt_head)

    def laid_out(self, engine, job: EditJob) -> EditJob | RowError:
        """``layout``, or the row's error (a hole that cannot fit, a prompt head too long for the model)."""
        if isinstance(job, RowError):
            return job
        laid = guarded(lambda: self.layout(engine, job))
        return laid if isinstance(laid, RowError) else too_long(engine, len(laid.prompt_head)) or laid

    def execute(self, engine, plans: list[EditJob], params, seeds: list[int]) -> list:
        answers: list = [self.laid_out(engine, p) for p in plans]
        todo = [i for i, a in enumerate(answers) if isinstance(a, EditJob)]
        if todo:
            results = run_edit_jobs(engine, [answers[i] for i in todo], params, [seeds[i] for i in todo],
                                    self.context_tokens)
            for i, res in zip(todo, results, strict=True):
                answers[i] = res
        return answers


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

    def plan_row(self, row: Row) -> EditJob:
        if self.reads_text:
            prefix, suffix = split_hole(row.text, self.hole_marker)
        else:
            prefix, suffix = row.columns.get(self.prefix_column), row.columns.get(self.suffix_column)
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

    def holes(self, engine, job: EditJob) -> list[Hole]:
        return [Hole(job.spans[0][0], job.spans[0][1], self.fill_tokens)]

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

    def plan_row(self, row: Row) -> EditJob:
        if self.span_markers:
            return EditJob(*spans_from_markers(row.text, *self.span_markers))
        return EditJob(row.text, parse_spans(row.columns.get(self.spans_column), len(row.text)))

    def budget(self, span_tokens: int) -> int:
        """Free positions for a span of ``span_tokens`` tokens (0: an insertion point)."""
        budget = self.insert_tokens if span_tokens == 0 else \
            math.ceil(span_tokens * self.edit_token_ratio) + self.edit_extra_tokens
        return budget if self.max_span_tokens is None else min(budget, self.max_span_tokens)

    def holes(self, engine, job: EditJob) -> list[Hole]:
        return plan_holes(engine.tokenizer, job, self.budget, self.window_tokens)

    def describe(self) -> dict:
        return {"kind": self.kind, "instruction": self.instruction}
