"""``task.kind: rewrite``: the instruction with the document in it goes through the chat template; long documents
go window by window, each window's prompt carrying the end of the text before it and its rewrite."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..engine import GenerationResult
from .base import Task, register
from .editing import CHARS_PER_TOKEN, cut_windows, last_chars, split_ws
from .seeds import window_seed


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
