"""The JSON skeleton of a schema and its renderer, for ``task.kind: structured`` (``engine/tasks/structured.py``,
whose docstring explains the construction and the canonicalisation the renderer does).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from .schema_subset import (MAX_INT_DIGITS, ArrayNode, EnumNode, IntegerNode, NumberNode, ObjectNode, SchemaError,
                            StringNode)

MAX_LAYOUT_POSITIONS = 4096  # canvas positions of one skeleton (16 canvases of the real model's 256)
MAX_NUM_DIGITS = (15, 6)  # integer and fraction digits of a number: exact in a float64


# ------------------------------------------------------------------------------------------------ skeleton

@dataclass(frozen=True)
class SlotHole:
    node: Any
    optional: bool  # in an array slot past minItems: an enum hole may also be "empty" there


def segments(node, optional: bool = False) -> Iterator[str | SlotHole]:
    """The skeleton in order: literal text and holes (the renderer walks the tree in this same order)."""
    if isinstance(node, ObjectNode):
        yield "{"
        for i, (name, child) in enumerate(node.properties):
            yield (", " if i else "") + json.dumps(name, ensure_ascii=False) + ": "
            yield from segments(child, optional)
        yield "}"
    elif isinstance(node, ArrayNode):
        yield "["
        for i in range(node.max_items):
            if i:
                yield ", "
            yield from segments(node.item, optional or i >= node.min_items)
        yield "]"
    elif isinstance(node, StringNode):
        yield from ('"', SlotHole(node, optional), '"') if node.width else ('""',)
    elif isinstance(node, EnumNode):
        if len(node.options) == 1:
            yield json.dumps(node.options[0], ensure_ascii=False)
        elif node.quoted:
            yield from ('"', SlotHole(node, optional), '"')
        else:
            yield SlotHole(node, optional)
    else:
        yield SlotHole(node, optional)


def layout_bound(node) -> int:
    """An upper bound on the skeleton's canvas positions without a tokenizer: hole widths plus the literal
    text's UTF-8 bytes (a byte-level or byte-fallback token covers at least one byte)."""
    total = 0
    for seg in segments(node):
        if isinstance(seg, str):
            total += len(seg.encode())
        elif isinstance(seg.node, EnumNode):
            total += max(1, *(len(t.encode()) for t in seg.node.texts()))
        else:
            total += seg.node.width
    return total


_DIGITS = re.compile(r"[0-9]+")
_SIGNED_DIGITS = re.compile(r"-[0-9]*")
_DECIMAL = re.compile(r"[0-9]*\.?[0-9]*")
_SIGNED_DECIMAL = re.compile(r"-[0-9]*\.?[0-9]*")


class TokenClasses:
    """Token ids per class, from the tokenizer's vocabulary (built once per engine)."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids: list[int]):
        strings = tokenizer.token_strings()[:vocab_size]
        special = tokenizer.special_ids()
        self.vocab_size = vocab_size
        self.stop = sorted(set(stop_ids))

        def ids(pred) -> list[int]:
            return [i for i, s in enumerate(strings) if s and i not in special and pred(s)]

        self.digits = ids(_DIGITS.fullmatch)
        self.signed_digits = self.digits + ids(_SIGNED_DIGITS.fullmatch)
        self.decimal = ids(_DECIMAL.fullmatch)
        self.signed_decimal = self.decimal + ids(_SIGNED_DECIMAL.fullmatch)
        # quotes and backslashes would look like the end of the string to the model; control characters would
        # be escaped by json.dumps but are never wanted inside a field
        self.string = ids(lambda s: not any(c in '"\\\x7f' or c < " " for c in s))


@dataclass
class Skeleton:
    """A compiled schema laid out for one tokenizer.

    Attributes:
        known: the layout for ``denoise_canvases`` (literal token ids, ``FREE`` at holes).
        allowed: per position, -1 or a row of ``masks``.
        masks: ``[M, vocab_size]`` bool tensor.
        holes: ``(start, width)`` of each hole, in the renderer's order.
        hole_options: per hole, the options' token sequences (enums; ``None`` otherwise).
    """

    root: Any
    known: list[int]
    allowed: list[int]
    masks: Any
    holes: list[tuple[int, int]]
    hole_options: list[list[list[int]] | None]
    stop: frozenset
    decode: Any = field(repr=False)

    @property
    def num_free(self) -> int:
        return sum(w for _, w in self.holes)


def enum_width(seqs: list[list[int]]) -> int:
    """Fewest positions whose contents tell every option apart (shorter options padded with an end token)."""
    longest = max(1, *(len(s) for s in seqs))
    for k in range(1, longest + 1):
        if len({tuple(s[:k]) + (None,) * max(0, k - len(s)) for s in seqs}) == len(seqs):
            return k
    return longest


def _hole_rows(seg: SlotHole, classes: TokenClasses, mask, tokenizer) -> tuple[list[int], list[list[int]] | None]:
    """A hole's mask rows, one per position, and (enums and booleans) its options' token ids."""
    node = seg.node
    if isinstance(node, StringNode):
        return [mask(classes.string)] * node.width, None
    if isinstance(node, (IntegerNode, NumberNode)):
        negative = node.minimum is None or node.minimum < 0
        first, rest = ((classes.signed_digits, classes.digits) if isinstance(node, IntegerNode)
                       else (classes.signed_decimal, classes.decimal))
        return [mask(first if negative else rest)] + [mask(rest)] * (node.width - 1), None
    options = [tokenizer.encode(t, add_bos=False) for t in node.texts()]
    rows = []
    for k in range(enum_width(options)):
        ids = {s[k] for s in options if k < len(s)}
        # an end token here means "an option that ends here" or, first in an optional slot, "empty"
        rows.append(mask(ids, end=any(len(s) <= k for s in options) or (k == 0 and seg.optional)))
    return rows, options


def build_skeleton(root, tokenizer, vocab_size: int, stop_ids: list[int]) -> Skeleton:
    """Lay ``root`` out for ``tokenizer``: literal text tokenized and clamped, each hole ``width`` free positions
    with one allowed-token mask per position. Raises ``SchemaError`` when the layout is over
    ``MAX_LAYOUT_POSITIONS``."""
    import torch

    from engine import FREE

    classes = TokenClasses(tokenizer, vocab_size, stop_ids)
    mask_rows: dict[tuple[int, ...], int] = {}

    def mask(ids, end: bool = True) -> int:
        """The mask row allowing ``ids`` (and the end tokens, as "empty", unless ``end`` is false)."""
        key = tuple(sorted(set(ids) | (set(classes.stop) if end else set())))
        return mask_rows.setdefault(key, len(mask_rows))

    known: list[int] = []
    allowed: list[int] = []
    holes, hole_options = [], []
    pending = ""

    def flush():
        nonlocal pending
        if pending:
            ids = tokenizer.encode(pending, add_bos=False)
            known.extend(ids)
            allowed.extend([-1] * len(ids))
            pending = ""

    for seg in segments(root):
        if isinstance(seg, str):
            pending += seg
            continue
        flush()
        rows, options = _hole_rows(seg, classes, mask, tokenizer)
        holes.append((len(known), len(rows)))
        hole_options.append(options)
        known.extend([FREE] * len(rows))
        allowed.extend(rows)
    flush()
    if len(known) > MAX_LAYOUT_POSITIONS:
        raise SchemaError("", f"the JSON skeleton takes {len(known)} canvas positions; at most "
                          f"{MAX_LAYOUT_POSITIONS} are supported (lower maxItems, maxLength or task.*_tokens)")
    masks = torch.zeros(len(mask_rows), vocab_size, dtype=torch.bool)
    for key, row in mask_rows.items():
        masks[row, [i for i in key if i < vocab_size]] = True
    return Skeleton(root=root, known=known, allowed=allowed, masks=masks, holes=holes, hole_options=hole_options,
                    stop=frozenset(classes.stop), decode=tokenizer.decode)


# ------------------------------------------------------------------------------------------------ rendering

def render(skeleton: Skeleton, token_ids: list[int]) -> str:
    """The JSON text for a denoised layout (``CanvasResult.token_ids``): valid by construction."""
    holes = iter(zip(skeleton.holes, skeleton.hole_options))
    value, _, _ = _render(skeleton.root, skeleton, token_ids, holes)
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _render(node, sk: Skeleton, ids: list[int], holes) -> tuple[Any, int, int]:
    """``(value, holes, empty holes)`` of one node, consuming its holes from ``holes`` in skeleton order."""
    if isinstance(node, ObjectNode):
        out, n, empty = {}, 0, 0
        for name, child in node.properties:
            out[name], dn, de = _render(child, sk, ids, holes)
            n, empty = n + dn, empty + de
        return out, n, empty
    if isinstance(node, ArrayNode):
        slots = [_render(node.item, sk, ids, holes) for _ in range(node.max_items)]
        keep = len(slots)
        while keep > node.min_items and slots[keep - 1][1] and slots[keep - 1][1] == slots[keep - 1][2]:
            keep -= 1
        return [v for v, _, _ in slots[:keep]], sum(s[1] for s in slots), sum(s[2] for s in slots)
    if isinstance(node, StringNode) and not node.width:
        return "", 0, 0
    if isinstance(node, EnumNode) and len(node.options) == 1:
        return node.options[0], 0, 0
    (start, width), options = next(holes)
    tokens = ids[start:start + width]
    empty = tokens[0] in sk.stop
    if isinstance(node, EnumNode):
        return node.options[_best_option(options, tokens, sk.stop)], 1, int(empty)
    cut = next((i for i, t in enumerate(tokens) if t in sk.stop), len(tokens))
    text = sk.decode(tokens[:cut], skip_special_tokens=True)
    if isinstance(node, StringNode):
        text = text.replace("\ufffd", "").strip()
        return (text if node.max_length is None else text[:node.max_length].rstrip()), 1, int(empty)
    if isinstance(node, IntegerNode):
        return _clamp(_parse_int(text), node.minimum, node.maximum), 1, int(empty)
    return _clamp(_parse_number(text), node.minimum, node.maximum), 1, int(empty)


def _best_option(options: list[list[int]], tokens: list[int], stop) -> int:
    def matched(seq: list[int]) -> int:
        n = 0
        for k, t in enumerate(tokens):
            if not (seq[k] == t if k < len(seq) else t in stop):
                break
            n += 1
        return n

    scores = [matched(s) for s in options]
    return scores.index(max(scores))


def _parse_int(text: str) -> int:
    sign = -1 if text.startswith("-") else 1
    digits = "".join(c for c in text if "0" <= c <= "9").lstrip("0")[:MAX_INT_DIGITS]
    return sign * int(digits or "0")


def _parse_number(text: str) -> int | float:
    sign = "-" if text.startswith("-") else ""
    whole, point, frac = text.partition(".")
    whole = "".join(c for c in whole if "0" <= c <= "9").lstrip("0")[:MAX_NUM_DIGITS[0]] or "0"
    frac = "".join(c for c in frac if "0" <= c <= "9")[:MAX_NUM_DIGITS[1]]
    return float(f"{sign}{whole}.{frac}") if frac else int(f"{sign}{whole}")


def _clamp(value, lo, hi):
    if lo is not None and value < lo:
        return lo
    if hi is not None and value > hi:
        return hi
    return value
