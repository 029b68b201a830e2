"""Infill, span edits and long documents: span checks, clamped layouts, windows, and exact reassembly.

Why this shape: a diffusion model denoises a whole canvas at once and sees both sides of it, so a hole to fill
is a run of ``FREE`` positions between clamped tokens (``DiffusionEngine.denoise_canvases``). The text outside
the holes never comes back from the model: the output is assembled from slices of the input string and the
decoded fills, so every character outside the spans is identical to the input by construction (never a
re-decode of clamped tokens, which would not round-trip for every tokenizer and every Unicode string).

Long documents go window by window. A window is one or more holes with the text between them clamped, followed
by as much clamped text after its last hole as its last canvas holds (the right-hand context the free positions
attend to). Before it, as causal context, comes the already edited text that ends at the window's first hole,
at most ``context_tokens`` tokens of it. The windows of one document run in order, each seeing the edits before
it; the windows of different documents in a batch run together, one engine call per round.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ..engine import GenerationResult
from ..plans import FREE
from .seeds import window_seed
from .windows import drive_windows

# A token covers at most about this many characters: text is sliced to this bound before it is tokenized, so a
# 100k-character document is never tokenized whole to find the tokens next to a window.
CHARS_PER_TOKEN = 16
_WORD = re.compile(r"\S+\s*|\s+")


# ------------------------------------------------------------------------------------------------ row inputs

def parse_spans(value, length: int) -> list[tuple[int, int]]:
    """Check a row's ``spans`` value: a list of ``[start, end)`` pairs of character offsets (Python string
    indices) into a text of ``length`` characters, sorted, not overlapping; ``start == end`` is an insertion point.

    Raises:
        ValueError: naming the first bad span (wrong type, reversed, out of range, overlapping, unsorted).
    """
    if value is None:
        raise ValueError("spans is null; expected a list of [start, end) pairs")
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"spans is a {type(value).__name__}; expected a list of [start, end) pairs")
    spans: list[tuple[int, int]] = []
    for i, pair in enumerate(value):
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in pair)):
            raise ValueError(f"span {i} ({pair!r}): expected a [start, end) pair of integers")
        start, end = pair
        if start > end:
            raise ValueError(f"span {i} [{start}, {end}): reversed (start > end)")
        if start < 0 or end > length:
            raise ValueError(f"span {i} [{start}, {end}): out of range for a text of {length} characters")
        before = f"span {i - 1} [{spans[-1][0]}, {spans[-1][1]})" if spans else ""
        if spans and start < spans[-1][0]:
            raise ValueError(f"span {i} [{start}, {end}): starts before {before}; spans must be sorted by start")
        if spans and start < spans[-1][1]:
            raise ValueError(f"span {i} [{start}, {end}): overlaps {before}")
        spans.append((start, end))
    return spans


def spans_from_markers(text: str, open_marker: str, close_marker: str) -> tuple[str, list[tuple[int, int]]]:
    """Spans marked in the text (``a [[b]] c``) -> the text without markers and the spans' offsets into it.

    Raises:
        ValueError: a marker without its partner, or a nested open marker, naming its character offset.
    """
    parts, spans, pos, out_len = [], [], 0, 0
    while True:
        opened, closed = text.find(open_marker, pos), text.find(close_marker, pos)
        if closed != -1 and (opened == -1 or closed < opened):
            raise ValueError(f"close marker {close_marker!r} at character {closed} has no open marker before it")
        if opened == -1:
            break
        inner_start = opened + len(open_marker)
        closed = text.find(close_marker, inner_start)
        if closed == -1:
            raise ValueError(f"open marker {open_marker!r} at character {opened} is never closed")
        nested = text.find(open_marker, inner_start, closed)
        if nested != -1:
            raise ValueError(f"open marker {open_marker!r} at character {nested} is inside the span opened at "
                             f"character {opened}; spans cannot nest")
        parts.append(text[pos:opened])
        start = out_len + opened - pos
        parts.append(text[inner_start:closed])
        out_len = start + closed - inner_start
        spans.append((start, out_len))
        pos = closed + len(close_marker)
    parts.append(text[pos:])
    return "".join(parts), spans


def split_hole(text: str, marker: str) -> tuple[str, str]:
    """``'a <|fill|> b'`` -> ``('a ', ' b')``. Raises ``ValueError`` unless the marker occurs exactly once."""
    count = text.count(marker)
    if count != 1:
        raise ValueError(f"text holds the hole marker {marker!r} {count} times; infill needs it exactly once")
    prefix, suffix = text.split(marker)
    return prefix, suffix


def assemble(document: str, spans: list[tuple[int, int]], replacements: list[str]) -> str:
    """The document with each span replaced: slices of the original between the spans, untouched."""
    out, cursor = [], 0
    for (start, end), new in zip(spans, replacements, strict=True):
        out += [document[cursor:start], new]
        cursor = end
    out.append(document[cursor:])
    return "".join(out)


def replaced_spans(spans: list[tuple[int, int]], replacements: list[str]) -> list[list[int]]:
    """Where each replacement lands in ``assemble``'s document: ``[start, end)`` offsets, shifted by the
    length changes of the spans before it."""
    out, shift = [], 0
    for (start, end), new in zip(spans, replacements, strict=True):
        out.append([start + shift, start + shift + len(new)])
        shift += len(new) - (end - start)
    return out


# ------------------------------------------------------------------------------------------------ windows

def cut_windows(text: str, count_tokens, max_tokens: int) -> list[tuple[int, int]]:
    """Cut ``text`` into consecutive ``[start, end)`` ranges (together exactly the text) of at most about
    ``max_tokens`` tokens each, at line ends where possible, else after whitespace, else anywhere.

    ``count_tokens(str) -> int`` is called once per line (and per word of an over-long line), never on the
    whole text. A window's count is the sum of its pieces' counts (BPE merges rarely cross a line end).
    """
    pieces: list[tuple[int, int, int]] = []  # (start, end, tokens)

    def add(start: int, end: int, level: int) -> None:
        n = count_tokens(text[start:end])
        if n <= max_tokens or end - start <= 1:
            pieces.append((start, end, n))
        elif level == 0:  # an over-long line: its words
            for m in _WORD.finditer(text, start, end):
                add(m.start(), m.end(), 1)
        else:  # an over-long word: halves
            mid = (start + end) // 2
            add(start, mid, 1)
            add(mid, end, 1)

    pos = 0
    for line in text.splitlines(keepends=True):
        add(pos, pos + len(line), 0)
        pos += len(line)
    windows, start, total = [], 0, 0
    for p_start, p_end, n in pieces:
        if total and total + n > max_tokens:
            windows.append((start, p_start))
            start, total = p_start, 0
        total += n
    if start < len(text) or not windows:
        windows.append((start, len(text)))
    return windows


def last_chars(parts: list[str], n: int) -> str:
    """The last ``n`` characters of ``"".join(parts)`` without joining everything."""
    out, have = [], 0
    for part in reversed(parts):
        if have >= n:
            break
        out.append(part)
        have += len(part)
    return "".join(reversed(out))[-n:] if n else ""


def split_ws(text: str) -> tuple[str, str, str]:
    """``'  a b \\n'`` -> ``('  ', 'a b', ' \\n')``: a window's own leading and trailing whitespace are kept."""
    core = text.strip()
    if not core:
        return text, "", ""
    lead = text[:len(text) - len(text.lstrip())]
    return lead, core, text[len(lead) + len(core):]


# ------------------------------------------------------------------------------------------------ edit jobs

@dataclass
class Hole:
    """A run of free positions: it replaces ``document[start:end)`` (empty: an insertion) with at most
    ``budget`` tokens. Spans longer than a window are several adjacent holes."""

    start: int
    end: int
    budget: int


@dataclass
class EditJob:
    """One row of ``infill`` or ``edit`` (its plan): the document and its spans; a laid-out copy
    (``layout``, which knows the engine) also has its holes and prompt head. ``prompt_head`` (BOS, or an instruction turn)
    starts every window's prompt; ``fill_only``: the result's text is the fill of the single hole (infill)."""

    document: str
    spans: list[tuple[int, int]]
    fill_only: bool = False
    holes: list[Hole] = field(default_factory=list)
    prompt_head: list[int] = field(default_factory=list)


def plan_holes(tok, job: EditJob, budget_of, window_tokens: int) -> list[Hole]:
    """The holes of ``job.spans``: ``budget_of(span_tokens) -> budget`` for each span (or piece of a span longer
    than ``window_tokens`` tokens, cut as a rewrite window would be)."""
    count = lambda s: len(tok.encode(s, add_bos=False))  # noqa: E731
    holes = []
    for start, end in job.spans:
        if start == end:
            holes.append(Hole(start, end, budget_of(0)))
            continue
        for a, b in cut_windows(job.document[start:end], count, window_tokens):
            holes.append(Hole(start + a, start + b, budget_of(count(job.document[start + a:start + b]))))
    return holes


def check_fits(job: EditJob, canvas: int, max_positions: int) -> None:
    """Raise ``ValueError`` naming the hole that cannot fit the model's positions even without context."""
    for hole in job.holes:
        need = len(job.prompt_head) + math.ceil(hole.budget / canvas) * canvas
        if need > max_positions:
            raise ValueError(f"the span at character {hole.start} has a budget of {hole.budget} tokens "
                             f"({math.ceil(hole.budget / canvas)} canvases of {canvas}), which with the "
                             f"{len(job.prompt_head)}-token prompt exceeds the model's {max_positions} positions")


def clean_fill(ids: list[int], eos_ids, skip_ids) -> tuple[list[int], bool]:
    """The tokens of a hole that make text: up to the first end-of-sequence, without padding and control
    tokens. Returns ``(ids, used_whole_budget)``."""
    kept, ended = [], False
    for t in ids:
        if t in eos_ids:
            ended = True
            break
        if t not in skip_ids:
            kept.append(t)
    return kept, not ended


def run_edit_jobs(engine, jobs: list[EditJob], params, seeds: list[int], context_tokens: int) -> list[GenerationResult]:
    """Run every job's windows to the end, one engine call per round; one ``GenerationResult`` per job.

    ``text`` is the edited document (or, with ``fill_only``, the fill); ``token_ids`` are the kept tokens of all
    holes; ``seconds`` runs from the start of this call to the job's last window; ``finish_reason`` is
    ``"length"`` when a hole used its whole budget without an end-of-sequence token.
    """
    return [res for res, _ in run_edit_jobs_with_fills(engine, jobs, params, seeds, context_tokens)]


def span_fills(job: EditJob, fills: list[str]) -> list[str]:
    """Each span's replacement from the job's hole fills (in hole order, as ``run_edit_jobs_with_fills`` gives
    them): a span is one hole if empty, else the consecutive holes that tile it (``plan_holes``). Callers that
    report where each replacement landed (Serve's ``/v1/edits``) need this; the bulk tasks only need the text."""
    out, k = [], 0
    for start, end in job.spans:
        parts = [fills[k]]
        k += 1
        while end > start and job.holes[k - 1].end < end:
            parts.append(fills[k])
            k += 1
        out.append("".join(parts))
    return out


def run_edit_jobs_with_fills(engine, jobs: list[EditJob], params, seeds: list[int],
                             context_tokens: int) -> list[tuple[GenerationResult, list[str]]]:
    """``run_edit_jobs``, each result paired with its job's decoded hole fills in hole order."""
    side = _TextSide.of(engine)
    runs = [_EditRun(job, seed, side, context_tokens) for job, seed in zip(jobs, seeds)]

    def call(windows: list[_EditWindow]) -> list:
        return engine.denoise_canvases([w.prompt_ids for w in windows], [w.known for w in windows], params,
                                       seeds=[w.seed for w in windows])

    drive_windows(runs, call)
    return [(run.result(), run.fills) for run in runs]


@dataclass(frozen=True)
class _TextSide:
    """What laying out and reading back windows needs of the engine: tokenizer, canvas, limits, and the tokens
    that end a fill (``eos``) or make no text (``skip``)."""

    tok: object
    canvas: int
    max_positions: int
    eos: frozenset = frozenset()
    skip: frozenset = frozenset()

    @classmethod
    def of(cls, engine) -> "_TextSide":
        tok, config = engine.tokenizer, engine.config
        skip = tok.special_ids() | {config.pad_token_id} | set(range(tok.vocab_size, config.vocab_size))
        return cls(tok, engine.canvas_length, config.max_position_embeddings, frozenset(engine.eos_ids),
                   frozenset(skip))


@dataclass(frozen=True)
class _EditWindow:
    """One window of an edit job: the prompt (head and context), the canvas layout, the holes on it, its seed."""

    prompt_ids: list[int]
    known: list[int]
    holes: list[Hole]
    seed: int


class _EditRun:
    """How far one job's window-by-window run got (a ``WindowRun``; fresh for every ``run_edit_jobs`` call, so a
    batch retried row by row starts each row over)."""

    def __init__(self, job: EditJob, seed: int, side: _TextSide, context_tokens: int):
        self.job, self.seed, self.side, self.context_tokens = job, seed, side, context_tokens
        self.parts: list[str] = []
        self.fills: list[str] = []
        self.token_ids: list[int] = []
        self.cursor = self.next_hole = self.windows = 0
        self.num_canvases = self.num_passes = self.num_corrections = 0
        self.seconds = 0.0
        self.hit_budget = False

    def next_window(self) -> _EditWindow | None:
        """The next window: the holes that share its canvases, the text after the last one, context before."""
        job, side = self.job, self.side
        if self.next_hole >= len(job.holes):
            return None
        holes = [job.holes[self.next_hole]]
        known = [FREE] * holes[0].budget
        limit = side.canvas - side.canvas // 4  # room for at least a quarter canvas of text after the last hole
        for hole in job.holes[self.next_hole + 1:]:
            gap = job.document[holes[-1].end:hole.start]
            if len(gap) > CHARS_PER_TOKEN * side.canvas:  # far too long to share a canvas: no need to count it
                break
            gap_ids = side.tok.encode(gap, add_bos=False) if gap else []
            if len(known) + len(gap_ids) + hole.budget > limit:
                break
            known += gap_ids + [FREE] * hole.budget
            holes.append(hole)
        n_canvases = math.ceil(len(known) / side.canvas)
        room = n_canvases * side.canvas - len(known)
        after = job.document[holes[-1].end:holes[-1].end + CHARS_PER_TOKEN * room]
        known += side.tok.encode(after, add_bos=False)[:room] if room and after else []
        budget = min(self.context_tokens, side.max_positions - n_canvases * side.canvas - len(job.prompt_head))
        before = last_chars(self.parts + [job.document[self.cursor:holes[0].start]], CHARS_PER_TOKEN * budget)
        _, context = side.tok.tail(before, budget)
        return _EditWindow(job.prompt_head + context, known, holes, window_seed(self.seed, self.windows))

    def accept(self, window: _EditWindow, res, round_start: float) -> None:
        offset = 0
        for hole in window.holes:
            ids, full = clean_fill(res.free_ids[offset:offset + hole.budget], self.side.eos, self.side.skip)
            offset += hole.budget
            text = self.side.tok.decode(ids)
            self.fills.append(text)
            self.token_ids += ids
            self.hit_budget |= full
            self.parts += [self.job.document[self.cursor:hole.start], text]
            self.cursor = hole.end
        self.next_hole += len(window.holes)
        self.windows += 1
        self.num_canvases += res.num_canvases
        self.num_passes += res.num_passes
        self.num_corrections += res.num_self_corrections
        self.seconds = round_start + res.seconds

    def result(self) -> GenerationResult:
        job = self.job
        text = "".join(self.fills) if job.fill_only else "".join(self.parts) + job.document[self.cursor:]
        return GenerationResult(
            text=text, token_ids=self.token_ids, num_canvases=self.num_canvases, num_passes=self.num_passes,
            tokens_per_pass=len(self.token_ids) / max(self.num_passes, 1), seconds=self.seconds,
            finish_reason="length" if self.hit_budget else "eos", num_self_corrections=self.num_corrections)
