"""Task kinds: how a row's text becomes an engine call and how the result becomes the row's output.

A task is a small picklable object the worker calls for every row; adding a kind means subclassing ``Task``,
decorating it with ``@register``, and adding the kind to ``TaskConfig.kind``. The worker only uses the methods
below (``prepare_row``, ``prompt_tokens``, ``generate``, ``output``), so a task may call a different engine entry
point by overriding ``generate``: ``infill`` and ``edit`` use clamped canvases (``pipelines/editing.py``), and read
input columns besides the text (``extra_columns``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import ClassVar

from engine import GenerationResult

from .config import TaskConfig
from .editing import (CHARS_PER_TOKEN, EditJob, Hole, check_fits, cut_windows, last_chars, parse_spans,
                      plan_holes, run_edit_jobs, spans_from_markers, split_hole, split_ws, window_seed)

TASKS: dict[str, type["Task"]] = {}


def register(cls: type["Task"]) -> type["Task"]:
    TASKS[cls.kind] = cls
    return cls


class Task:
    """Base task: the prompt is the text, sent as is (``chat=False``) or as a user turn (``chat=True``)."""

    kind: ClassVar[str] = ""
    chat: ClassVar[bool] = False
    reads_text: bool = True  # False: the worker does not check the text column (infill from prefix/suffix columns)

    @classmethod
    def from_config(cls, cfg: TaskConfig) -> "Task":
        return cls()

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


@dataclass
class RewriteDoc:
    """A document to rewrite and its windows, ``[start, end)`` character ranges that together are the document
    (one window unless it has more than ``task.window_tokens`` tokens)."""

    text: str
    windows: list[tuple[int, int]] = field(default_factory=list)


@register
class RewriteTask(Task):
    """The instruction, with the document in place of ``{text}``, goes through the chat template; the reply
    (trimmed) replaces the document.

    A document longer than ``window_tokens`` tokens is cut into windows (at line ends where possible) rewritten one
    after the other: each window's prompt is a conversation whose first exchange is the end of the text before the
    window and its rewrite (``context_tokens`` tokens at most, half each), then the instruction for the window. The
    rewritten windows are joined with each window's own leading and trailing whitespace, so line and paragraph
    breaks between windows are kept exactly; ``sampling.max_new_tokens`` bounds each window.
    """

    kind = "rewrite"
    chat = True

    def __init__(self, instruction: str, window_tokens: int = 256, context_tokens: int = 1024):
        if instruction.count("{text}") != 1:
            raise ValueError("task.instruction: must contain '{text}' exactly once")
        self.instruction = instruction
        self.window_tokens = window_tokens
        self.context_tokens = context_tokens

    @classmethod
    def from_config(cls, cfg: TaskConfig) -> "RewriteTask":
        return cls(cfg.instruction or "", cfg.window_tokens, cfg.context_tokens)

    def prepare(self, text: str) -> str:
        # str.replace, not str.format: documents and instructions may hold other braces
        return self.instruction.replace("{text}", text)

    def prepare_row(self, text: str | None, columns: dict) -> RewriteDoc:
        return RewriteDoc(text)

    def prompt_tokens(self, engine, doc: RewriteDoc) -> int:
        """Cuts the windows; returns the largest window prompt without context (context is fitted to the limit)."""
        count = lambda t: len(engine.tokenizer.encode(t))  # noqa: E731
        if count(doc.text) <= self.window_tokens:
            doc.windows = [(0, len(doc.text))]
            return super().prompt_tokens(engine, self.prepare(doc.text))
        doc.windows = cut_windows(doc.text, count, self.window_tokens)
        return max(super(RewriteTask, self).prompt_tokens(engine, self.prepare(split_ws(doc.text[a:b])[1]))
                   for a, b in doc.windows)

    def generate(self, engine, docs: list[RewriteDoc], params, seeds: list[int]):
        """One-window documents exactly as before (one chat call); longer ones window by window, in rounds."""
        started = time.perf_counter()
        runs = [_RewriteRun() for _ in docs]
        while True:
            plain, with_context = [], []  # (row, prompt)
            for i, (doc, run) in enumerate(zip(docs, runs)):
                while run.next < len(doc.windows):
                    a, b = doc.windows[run.next]
                    lead, core, trail = split_ws(doc.text[a:b]) if len(doc.windows) > 1 else ("", doc.text, "")
                    if core:
                        break
                    run.parts.append(lead)  # a window of whitespace only is kept as it is
                    run.next += 1
                else:
                    continue
                context = self._context(engine, doc, run, a, core)
                (with_context if context else plain).append((i, context or self.prepare(core)))
            if not plain and not with_context:
                break
            for group, chat in ((plain, True), (with_context, False)):
                if not group:
                    continue
                rows = [i for i, _ in group]
                round_start = time.perf_counter() - started
                results = engine.generate([p for _, p in group], params, chat=chat,
                                          seeds=[window_seed(seeds[i], runs[i].next) for i in rows])
                for i, res in zip(rows, results, strict=True):
                    runs[i].add(docs[i], res, round_start)
        return [run.result(doc) for doc, run in zip(docs, runs)]

    def _context(self, engine, doc: RewriteDoc, run: "_RewriteRun", start: int, core: str) -> str | None:
        """The templated conversation for a window after the first: the text before it and its rewrite (ends
        of each), then this window's instruction; ``None`` for a first window or when no context fits."""
        if not run.parts or not doc.text[:start].strip():
            return None
        half = self.context_tokens // 2
        source, _ = engine.tokenizer.tail(doc.text[max(0, start - CHARS_PER_TOKEN * half):start], half)
        rewritten, _ = engine.tokenizer.tail(last_chars(run.parts, CHARS_PER_TOKEN * half), half)
        if not source.strip() or not rewritten.strip():
            return None
        text = engine.apply_chat_template([
            {"role": "user", "content": self.prepare(source.strip())},
            {"role": "assistant", "content": rewritten.strip()},
            {"role": "user", "content": self.prepare(core)}])
        return text if len(engine.tokenizer.encode(text)) <= engine.max_prompt_tokens else None

    def output(self, result) -> str:
        return result.text.strip()

    def describe(self) -> dict:
        return {"kind": self.kind, "instruction": self.instruction}


@dataclass
class _RewriteRun:
    """How far one document's window-by-window rewrite got."""

    next: int = 0
    parts: list[str] = field(default_factory=list)
    results: list = field(default_factory=list)
    seconds: float = 0.0

    def add(self, doc: RewriteDoc, res, round_start: float) -> None:
        a, b = doc.windows[self.next]
        if len(doc.windows) == 1:
            self.parts.append(res.text)
        else:
            lead, _, trail = split_ws(doc.text[a:b])
            self.parts += [lead, res.text.strip(), trail]
        self.results.append(res)
        self.seconds = round_start + res.seconds
        self.next += 1

    def result(self, doc: RewriteDoc):
        if len(self.results) == 1 and len(doc.windows) == 1:
            return self.results[0]  # a short document: the engine's own result
        token_ids = [t for r in self.results for t in r.token_ids]
        passes = sum(r.num_passes for r in self.results)
        return GenerationResult(
            text="".join(self.parts), token_ids=token_ids, num_canvases=sum(r.num_canvases for r in self.results),
            num_passes=passes, tokens_per_pass=len(token_ids) / max(passes, 1), seconds=self.seconds,
            finish_reason="length" if any(r.finish_reason == "length" for r in self.results) else "eos",
            num_self_corrections=sum(r.num_self_corrections for r in self.results))


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

    @classmethod
    def from_config(cls, cfg: TaskConfig) -> "InfillTask":
        return cls(cfg.infill_input, cfg.prefix_column, cfg.suffix_column, cfg.hole_marker, cfg.fill_tokens,
                   cfg.instruction, cfg.context_tokens, cfg.char_limit())

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

    @classmethod
    def from_config(cls, cfg: TaskConfig) -> "EditTask":
        return cls(cfg.spans_column, cfg.span_markers, cfg.instruction, cfg.edit_token_ratio, cfg.edit_extra_tokens,
                   cfg.insert_tokens, cfg.window_tokens, cfg.context_tokens)

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


def build_task(cfg: TaskConfig) -> Task:
    if cfg.kind not in TASKS:
        raise ValueError(f"task.kind: unknown kind {cfg.kind!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[cfg.kind].from_config(cfg)


from . import structured  # noqa: E402,F401  (registers 'structured')
