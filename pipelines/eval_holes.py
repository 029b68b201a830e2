"""Deterministic holes for the quality harness: cut from a corpus's files so that ``prefix + truth + suffix`` is
exactly a slice of the source (the round trip the tests check).

Kinds: ``line`` (one non-blank line, without its newline), ``span`` (a run of 4-32 tokens starting and ending
at token boundaries), ``body`` (the body of a function with a one-line ``def`` signature). The same
``(files, kind, n, seed)`` always gives the same holes, on any machine.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass

_DEF = re.compile(r"^([ \t]*)(?:async\s+)?def\s[^\n]*:[ \t]*(?:#[^\n]*)?\n", re.MULTILINE)
HOLE_KINDS = ("line", "span", "body")


@dataclass(frozen=True)
class Hole:
    id: str
    kind: str
    prefix: str
    truth: str
    suffix: str

    def row(self) -> dict:
        return asdict(self)


def _line(text: str, rng: random.Random, count) -> tuple[int, int] | None:
    starts = [m.start() for m in re.finditer(r"^[ \t]*\S[^\n]*$", text, re.MULTILINE)]
    if not starts:
        return None
    start = rng.choice(starts)
    end = text.find("\n", start)
    return start, len(text) if end == -1 else end


def _span(text: str, rng: random.Random, count, encode_offsets) -> tuple[int, int] | None:
    offsets = encode_offsets(text)
    if len(offsets) < 8:
        return None
    n = rng.randint(4, 32)
    i = rng.randrange(0, max(1, len(offsets) - n))
    start, end = offsets[i][0], offsets[min(len(offsets), i + n) - 1][1]
    if not text[start:end].strip():
        return None
    return start, end


def _body(text: str, rng: random.Random, count) -> tuple[int, int] | None:
    defs = list(_DEF.finditer(text))
    if not defs:
        return None
    m = rng.choice(defs)
    indent = len(m.group(1).expandtabs())
    start = end = pos = m.end()
    for line in text[m.end():].splitlines(keepends=True):
        stripped = line.strip()
        if stripped and len(line) - len(line.lstrip()) <= indent:
            break
        pos += len(line)
        if stripped:
            end = pos - (1 if line.endswith("\n") else 0)
    return (start, end) if end > start else None


def cut_holes(files: list[tuple[str, str]], kind: str, n: int, seed: int, encode_offsets=None,
              max_truth_tokens: int | None = None, count_tokens=None, prefix_chars: int = 4000,
              suffix_chars: int = 2000) -> list[Hole]:
    """``n`` holes of ``kind`` from ``files`` (``(path, text)`` pairs), drawn with ``random.Random(seed)``.

    Args:
        encode_offsets: ``text -> [(start, end), ...]`` token character offsets (needed for ``span``).
        max_truth_tokens, count_tokens: skip holes whose truth has more tokens than this (so a fill budget
            can hold it).
        prefix_chars, suffix_chars: how much text each side keeps (the tasks read only the end of the prefix
            and the start of the suffix).
    Raises:
        ValueError: unknown kind, or fewer than ``n`` holes could be cut.
    """
    if kind not in HOLE_KINDS:
        raise ValueError(f"hole kind must be one of {HOLE_KINDS}, got {kind!r}")
    if kind == "span" and encode_offsets is None:
        raise ValueError("span holes need encode_offsets (token boundaries)")
    files = sorted((p, t) for p, t in files if t.strip())
    rng = random.Random(f"{seed}:{kind}")
    holes, seen, tries = [], set(), 0
    while len(holes) < n:
        tries += 1
        if tries > 50 * n + 500 or not files:
            raise ValueError(f"could only cut {len(holes)} of {n} {kind} holes from {len(files)} files")
        path, text = files[rng.randrange(len(files))]
        cut = (_span(text, rng, count_tokens, encode_offsets) if kind == "span"
               else (_line if kind == "line" else _body)(text, rng, count_tokens))
        if cut is None or (path, cut[0]) in seen:  # a hole's id is path:kind:start, so one hole per start
            continue
        start, end = cut
        truth = text[start:end]
        if max_truth_tokens is not None and count_tokens is not None and count_tokens(truth) > max_truth_tokens:
            continue
        seen.add((path, start))
        holes.append(Hole(f"{path}:{kind}:{start}", kind, text[max(0, start - prefix_chars):start], truth,
                          text[end:end + suffix_chars]))
    return holes
