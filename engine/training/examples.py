"""Training examples in the exact layouts the engine's tasks build at inference time.

Every example is one canvas to denoise: a causal context (BOS, then the text before, then any canvases of the
same hole already committed) and the canvas's target tokens, some of which are *known* (clamped, given clean,
never noised, no loss) and the rest *free* (noised, and scored).

* ``line`` / ``span`` / ``body`` infill: the infill and edit tasks' layout (``_window`` in the editing code):
  ``budget`` free positions, the fill's tokens then EOS up to the budget, then as much of the text after the
  hole as the last canvas holds (clamped), then padding. The context is the tail of the text before the hole
  (``Tokenizer.tail``), the text, the fill and the suffix each tokenized on their own, as the tasks do. The
  model learns to end a fill inside its budget, and that the text after the hole follows it.
* ``continue``: the generate task's layout: a prompt, then a fully free canvas of what follows (EOS past the
  end of the file).

Shapes: B = batch, T = context tokens (left-padded), C = canvas length.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

import torch

from .corpus import SourceFile

KINDS = ("line", "span", "body", "continue")
_DEF = re.compile(r"^([ \t]*)(?:async\s+)?def\s[^\n]*:[ \t]*(?:#[^\n]*)?\n", re.MULTILINE)


@dataclass(frozen=True)
class LayoutSpec:
    """How examples are cut. ``context_tokens``: most tokens of text before a hole (as the task's setting);
    ``line_budget``: the largest fill budget of a single-line hole (budgets are drawn up to it)."""

    canvas_length: int
    context_tokens: int = 128
    line_budget: int = 24
    max_span_tokens: int = 32
    max_body_canvases: int = 3


@dataclass
class Example:
    kind: str
    context: list[int]  # BOS first
    canvas: list[int]  # C target tokens
    known: list[bool]  # C flags: True = clamped (given clean, not scored)


class ExampleMaker:
    """Cuts examples from source files with a ``random.Random``; ``tok`` is an ``engine.tokenizer.Tokenizer``."""

    def __init__(self, tok, spec: LayoutSpec, eos_id: int, pad_id: int):
        self.tok, self.spec, self.eos, self.pad = tok, spec, eos_id, pad_id
        self.bos = tok.encode("")  # the tasks' prompt head: BOS

    def _ids(self, text: str) -> list[int]:
        return self.tok.encode(text, add_bos=False) if text else []

    def hole(self, kind: str, text: str, start: int, end: int, budget: int, rng: random.Random) -> Example | None:
        """One canvas of the layout for replacing ``text[start:end)`` within ``budget`` tokens (None when the
        fill does not fit its budget)."""
        c = self.spec.canvas_length
        fill = self._ids(text[start:end])
        if len(fill) > budget:
            return None
        n = math.ceil(budget / c)
        room = n * c - budget
        suffix = self._ids(text[end:end + 16 * room])[:room] if room else []
        target = fill + [self.eos] * (budget - len(fill)) + suffix
        target += [self.pad] * (n * c - len(target))
        known = [False] * budget + [True] * (n * c - budget)
        _, context = self.tok.tail(text[max(0, start - 16 * self.spec.context_tokens):start], self.spec.context_tokens)
        k = rng.randrange(n)
        return Example(kind, self.bos + context + target[:k * c], target[k * c:(k + 1) * c], known[k * c:(k + 1) * c])

    def line(self, src: SourceFile, rng: random.Random) -> Example | None:
        """A single non-blank line (without its newline), budget drawn up to ``line_budget``."""
        starts = [m.start() for m in re.finditer(r"^[^\n]*\S[^\n]*$", src.text, re.MULTILINE)]
        if not starts:
            return None
        start = rng.choice(starts)
        end = src.text.find("\n", start)
        end = len(src.text) if end == -1 else end
        n = len(self._ids(src.text[start:end]))
        if n + 1 > self.spec.line_budget:
            return None
        return self.hole("line", src.text, start, end, rng.randint(n + 1, self.spec.line_budget), rng)

    def span(self, src: SourceFile, rng: random.Random) -> Example | None:
        """A span of about 4-32 tokens starting and ending at word boundaries, budget a little above its length."""
        words = [m.start() for m in re.finditer(r"(?<!\S)\S", src.text)]
        if len(words) < 2:
            return None
        i = rng.randrange(len(words) - 1)
        start = words[i]
        chars = rng.randint(8, 3 * self.spec.max_span_tokens)
        end_at = min(len(src.text), start + chars)
        m = re.compile(r"\S(?=\s|$)").search(src.text, end_at - 1)
        end = m.end() if m else len(src.text)
        n = len(self._ids(src.text[start:end]))
        if not 1 <= n <= self.spec.max_span_tokens:
            return None
        return self.hole("span", src.text, start, end, n + rng.randint(1, 8), rng)

    def body(self, src: SourceFile, rng: random.Random) -> Example | None:
        """The body of a function (every line after a one-line ``def`` signature indented deeper than it)."""
        defs = list(_DEF.finditer(src.text))
        if not defs:
            return None
        m = rng.choice(defs)
        indent = len(m.group(1).expandtabs())
        start = end = m.end()
        pos = m.end()
        for line in src.text[m.end():].splitlines(keepends=True):
            stripped = line.strip()
            if stripped and len(line) - len(line.lstrip()) <= indent:
                break
            pos += len(line)
            if stripped:
                end = pos - (1 if line.endswith("\n") else 0)
        if end <= start:
            return None
        n = len(self._ids(src.text[start:end]))
        max_budget = self.spec.max_body_canvases * self.spec.canvas_length
        if n + 1 > max_budget:
            return None
        return self.hole("body", src.text, start, end, rng.randint(n + 1, min(max_budget, n + 16)), rng)

    def cont(self, src: SourceFile, rng: random.Random) -> Example | None:
        """Continue from the start of a random line, with a prompt of 8 to ``context_tokens`` tokens."""
        starts = [0] + [m.end() for m in re.finditer(r"\n", src.text)]
        p = rng.choice(starts)
        c = self.spec.canvas_length
        _, context = self.tok.tail(src.text[max(0, p - 16 * self.spec.context_tokens):p],
                                   rng.randint(8, self.spec.context_tokens))
        target = self._ids(src.text[p:p + 16 * c])[:c]
        target += [self.eos] * (c - len(target))
        return Example("continue", self.bos + context, target, [False] * c)

    def make(self, kind: str, src: SourceFile, rng: random.Random) -> Example | None:
        return {"line": self.line, "span": self.span, "body": self.body, "continue": self.cont}[kind](src, rng)


def sample_examples(maker: ExampleMaker, files: list[SourceFile], weights: dict[str, float], n: int,
                    rng: random.Random) -> list[Example]:
    """``n`` examples: a kind drawn by ``weights``, a file drawn by size, retried until one fits."""
    kinds = [k for k in KINDS if weights.get(k, 0) > 0]
    kind_w = [weights[k] for k in kinds]
    sizes = [len(f.text) for f in files]
    out: list[Example] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 100 * n + 1000:
            raise RuntimeError(f"could not cut {n} examples from {len(files)} files (kinds {kinds})")
        kind = rng.choices(kinds, kind_w)[0]
        src = rng.choices(files, sizes)[0]
        ex = maker.make(kind, src, rng)
        if ex is not None:
            out.append(ex)
    return out


@dataclass
class Batch:
    context_BT: torch.Tensor  # long, left-padded with pad
    valid_BT: torch.Tensor  # bool, False at padding
    canvas_BC: torch.Tensor  # long targets
    known_BC: torch.Tensor  # bool

    @property
    def tokens(self) -> int:
        return int(self.valid_BT.sum()) + self.canvas_BC.numel()


def collate(examples: list[Example], pad_id: int) -> Batch:
    t = max(len(e.context) for e in examples)
    ctx = torch.full((len(examples), t), pad_id, dtype=torch.long)
    valid = torch.zeros((len(examples), t), dtype=torch.bool)
    for i, e in enumerate(examples):
        ctx[i, t - len(e.context):] = torch.tensor(e.context)
        valid[i, t - len(e.context):] = True
    canvas = torch.tensor([e.canvas for e in examples], dtype=torch.long)
    known = torch.tensor([e.known for e in examples], dtype=torch.bool)
    return Batch(ctx, valid, canvas, known)
