"""``task.kind: rewrite``: the instruction with the document in it goes through the chat template; long documents
go window by window, each window's prompt carrying the end of the text before it and its rewrite."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from ..engine import GenerationResult
from .base import PromptPlan, Row, Task, register
from .editing import CHARS_PER_TOKEN, cut_windows, last_chars, split_ws
from .seeds import window_seed
from .windows import drive_windows


@dataclass(frozen=True)
class RewritePlan:
    """A row of ``rewrite``: the document. Its windows are cut when it runs (they are counted in tokens)."""

    text: str



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

    def prepare(self, text: str) -> str:
        # str.replace, not str.format: documents and instructions may hold other braces
        return self.instruction.replace("{text}", text)

    def plan_row(self, row: Row) -> RewritePlan:
        return RewritePlan(row.text)

    def windows(self, engine, plan: RewritePlan) -> list[tuple[int, int]]:
        """The document's windows, ``[start, end)`` character ranges that together are the document (one window
        unless it has more than ``window_tokens`` tokens)."""
        count = lambda t: len(engine.tokenizer.encode(t))  # noqa: E731
        if count(plan.text) <= self.window_tokens:
            return [(0, len(plan.text))]
        return cut_windows(plan.text, count, self.window_tokens)

    def count_tokens(self, engine, plan: RewritePlan) -> int:
        """The largest window prompt without context (context is fitted to the limit)."""
        windows = self.windows(engine, plan)
        if len(windows) == 1:
            return super().count_tokens(engine, PromptPlan(self.prepare(plan.text), True))
        return max(super(RewriteTask, self).count_tokens(engine, PromptPlan(self.prepare(split_ws(plan.text[a:b])[1]),
                                                                             True))
                   for a, b in windows)

    def execute(self, engine, plans: list[RewritePlan], params, seeds: list[int]) -> list:
        """One-window documents in one chat call; longer ones window by window, in rounds (``drive_windows``)."""
        answers: list = [self._fits(engine, p) for p in plans]
        runs = {i: _RewriteRun(self, engine, plans[i], self.windows(engine, plans[i]), seeds[i])
                for i, a in enumerate(answers) if a is None}
        drive_windows(list(runs.values()), lambda windows: _generate_windows(engine, windows, params))
        for i, run in runs.items():
            answers[i] = run.result()
        return answers

    def whole_prompt(self, plan: RewritePlan) -> tuple[str, bool]:
        return self.prepare(plan.text), True

    def context(self, engine, doc: RewritePlan, parts: list[str], start: int, core: str) -> str | None:
        """The templated conversation for a window after the first: the text before it and its rewrite (ends
        of each), then this window's instruction; ``None`` for a first window or when no context fits."""
        if not parts or not doc.text[:start].strip():
            return None
        half = self.context_tokens // 2
        source, _ = engine.tokenizer.tail(doc.text[max(0, start - CHARS_PER_TOKEN * half):start], half)
        rewritten, _ = engine.tokenizer.tail(last_chars(parts, CHARS_PER_TOKEN * half), half)
        if not source.strip() or not rewritten.strip():
            return None
        text = engine.apply_chat_template([
            {"role": "user", "content": self.prepare(source.strip())},
            {"role": "assistant", "content": rewritten.strip()},
            {"role": "user", "content": self.prepare(core)}])
        return text if len(engine.tokenizer.encode(text)) <= engine.max_prompt_tokens else None

    def render(self, plan, result) -> str:
        return result.text.strip()

    def describe(self) -> dict:
        return {"kind": self.kind, "instruction": self.instruction}


@dataclass(frozen=True)
class _Window:
    """One window's engine call: the prompt (templated already when it carries context) and its seed."""

    prompt: str
    chat: bool
    seed: int


def _generate_windows(engine, windows: list[_Window], params) -> list:
    """A round's windows: those without context through the chat template in one call, then those with context
    (templated already) in another; a second call's results count the first call's time in their ``seconds``."""
    results: list = [None] * len(windows)
    started = time.perf_counter()
    for chat in (True, False):
        group = [i for i, w in enumerate(windows) if w.chat == chat]
        if not group:
            continue
        waited = time.perf_counter() - started
        out = engine.generate([windows[i].prompt for i in group], params, chat=chat,
                              seeds=[windows[i].seed for i in group])
        for i, res in zip(group, out, strict=True):
            results[i] = dataclasses.replace(res, seconds=res.seconds + waited) if waited and not chat else res
    return results


class _RewriteRun:
    """How far one document's window-by-window rewrite got (a ``WindowRun``)."""

    def __init__(self, task: RewriteTask, engine, doc: RewritePlan, windows: list[tuple[int, int]], seed: int):
        self.task, self.engine, self.doc, self.windows, self.seed = task, engine, doc, windows, seed
        self.next = 0
        self.parts: list[str] = []
        self.results: list = []
        self.seconds = 0.0

    def next_window(self) -> _Window | None:
        doc = self.doc
        while self.next < len(self.windows):
            a, b = self.windows[self.next]
            lead, core, _ = split_ws(doc.text[a:b]) if len(self.windows) > 1 else ("", doc.text, "")
            if core:
                break
            self.parts.append(lead)  # a window of whitespace only is kept as it is
            self.next += 1
        else:
            return None
        context = self.task.context(self.engine, doc, self.parts, a, core)
        seed = window_seed(self.seed, self.next)
        return _Window(context, False, seed) if context else _Window(self.task.prepare(core), True, seed)

    def accept(self, window: _Window, res, round_start: float) -> None:
        a, b = self.windows[self.next]
        if len(self.windows) == 1:
            self.parts.append(res.text)
        else:
            lead, _, trail = split_ws(self.doc.text[a:b])
            self.parts += [lead, res.text.strip(), trail]
        self.results.append(res)
        self.seconds = round_start + res.seconds
        self.next += 1

    def result(self):
        if len(self.results) == 1 and len(self.windows) == 1:
            return self.results[0]  # a short document: the engine's own result
        token_ids = [t for r in self.results for t in r.token_ids]
        passes = sum(r.num_passes for r in self.results)
        return GenerationResult(
            text="".join(self.parts), token_ids=token_ids, num_canvases=sum(r.num_canvases for r in self.results),
            num_passes=passes, tokens_per_pass=len(token_ids) / max(passes, 1), seconds=self.seconds,
            finish_reason="length" if any(r.finish_reason == "length" for r in self.results) else "eos",
            num_self_corrections=sum(r.num_self_corrections for r in self.results))
