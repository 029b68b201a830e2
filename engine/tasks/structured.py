"""Structured output (``task.kind: structured``): JSON that parses and validates against a JSON Schema subset,
by construction, whatever the weights.

How: the schema is compiled into a tree of nodes (``engine.tasks.schema_subset``, which lists the supported subset),
the tree into a *skeleton*: the JSON text with every value left open as a typed *hole*. Literal text (braces,
property names, quotes, commas) is tokenized and clamped on the canvas; each hole is a run of free positions whose
tokens are restricted by an allowed-token mask (digits for integers, string-safe tokens for strings, the options'
tokens for enums and booleans; an end-of-sequence or pad token is allowed as "empty", for enums only in optional
array slots). ``engine.denoise_canvases`` fills the holes; a deterministic renderer then turns each hole's tokens
into a valid value and the tree into JSON with ``json.dumps``, and ``jsonschema`` checks the result as a last
line of defence (a failure is an error row, never a silently wrong row).

Canonicalisation done by the renderer (so a hole's tokens and the written value may differ):

- strings: the hole's text up to its first end token, U+FFFD (pieces of an incomplete UTF-8 sequence) removed,
  surrounding whitespace stripped, cut to ``maxLength`` characters; written with ``json.dumps``.
- integers: the digits up to the first end token (a leading ``-`` only where negatives are allowed), leading
  zeros stripped, at most 18 digits; empty gives 0; then clamped to ``minimum`` / ``maximum``.
- numbers: the same, with one decimal point (further points dropped), at most 15 integer and 6 fraction digits;
  written as an integer when there is no fraction.
- enums and booleans: the option whose tokens match the hole's longest prefix (ties: the first listed option).
- arrays: ``maxItems`` item slots are laid out; trailing slots whose holes all came out empty are dropped down to
  ``minItems``; empty slots before a kept one are kept with their empty values (``""``, 0, first option).
- objects: every property, in the schema's order, optional ones included.
"""

from __future__ import annotations

import json
import re
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterator

from .schema_subset import (MAX_INT_DIGITS, ArrayNode, EnumNode, IntegerNode, NumberNode, ObjectNode, SchemaError,
                            StringNode, Widths, compile_schema, schema_validator)
from .base import Task, register

MAX_LAYOUT_POSITIONS = 4096  # canvas positions of one skeleton (16 canvases of the real model's 256)
MAX_NUM_DIGITS = (15, 6)  # integer and fraction digits of a number: exact in a float64
DEFAULT_INSTRUCTION = "Extract the fields as JSON."


# ------------------------------------------------------------------------------------------------ skeleton

@dataclass(frozen=True)
class Hole:
    node: Any
    optional: bool  # in an array slot past minItems: an enum hole may also be "empty" there


def segments(node, optional: bool = False) -> Iterator[str | Hole]:
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
        yield from ('"', Hole(node, optional), '"') if node.width else ('""',)
    elif isinstance(node, EnumNode):
        if len(node.options) == 1:
            yield json.dumps(node.options[0], ensure_ascii=False)
        elif node.quoted:
            yield from ('"', Hole(node, optional), '"')
        else:
            yield Hole(node, optional)
    else:
        yield Hole(node, optional)


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
        node, options = seg.node, None
        if isinstance(node, StringNode):
            rows = [mask(classes.string)] * node.width
        elif isinstance(node, IntegerNode):
            negative = node.minimum is None or node.minimum < 0
            rows = [mask(classes.signed_digits if negative else classes.digits)] + [mask(classes.digits)] * (node.width - 1)
        elif isinstance(node, NumberNode):
            negative = node.minimum is None or node.minimum < 0
            rows = ([mask(classes.signed_decimal if negative else classes.decimal)]
                    + [mask(classes.decimal)] * (node.width - 1))
        else:
            options = [tokenizer.encode(t, add_bos=False) for t in node.texts()]
            width = enum_width(options)
            rows = []
            for k in range(width):
                ids = {s[k] for s in options if k < len(s)}
                # an end token here means "an option that ends here" or, first in an optional slot, "empty"
                rows.append(mask(ids, end=any(len(s) <= k for s in options) or (k == 0 and seg.optional)))
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


# ------------------------------------------------------------------------------------------------ the task

@register
class StructuredTask(Task):
    """``task.kind: structured``: the row's text is the context, the output is JSON following ``task.schema``.

    The prompt is a user turn (through the checkpoint's chat template) holding the instruction and the text; the
    skeleton is the known canvas after it. Every ``ok`` row's output parses as JSON and validates against the
    schema; an output that would not (which the construction rules out) becomes an error row instead.
    """

    kind = "structured"
    chat = True

    def __init__(self, schema: dict, instruction: str | None = None, widths: Widths = Widths()):
        """Raises ``SchemaError`` (with the JSON path) for a schema outside the subset or too large to lay out,
        ``ValueError`` for an instruction with more than one ``{text}``."""
        self.instruction = instruction or DEFAULT_INSTRUCTION
        if self.instruction.count("{text}") > 1:
            raise ValueError("task.instruction: may contain '{text}' at most once")
        self.schema = schema
        self.widths = widths
        self.root = compile_schema(schema, widths)
        bound = layout_bound(self.root)
        if bound > MAX_LAYOUT_POSITIONS:
            raise SchemaError("", f"the JSON skeleton may take up to {bound} canvas positions (hole widths plus the "
                              f"literal text's bytes); at most {MAX_LAYOUT_POSITIONS} are supported (lower maxItems, "
                              "maxLength or task.*_tokens)")
        schema_validator(schema)
        self._cache = weakref.WeakKeyDictionary()  # engine -> (skeleton, validator)

    def __getstate__(self):  # the per-engine skeleton (tensors, tokenizer methods) is rebuilt where it is used
        return {k: v for k, v in self.__dict__.items() if k != "_cache"}

    def __setstate__(self, state):
        self.__dict__.update(state, _cache=weakref.WeakKeyDictionary())

    def prepare(self, text: str) -> str:
        # str.replace, not str.format: documents and instructions may hold other braces
        if "{text}" in self.instruction:
            return self.instruction.replace("{text}", text)
        return f"{self.instruction}\n\n{text}"

    def prompt_tokens(self, engine, prompt: str) -> int:
        """The prompt's tokens; raises ``ValueError`` (an error row) when the skeleton's canvases do not fit after
        it within the model's positions."""
        n = super().prompt_tokens(engine, prompt)
        problem = self._room_problem(engine, n)
        if problem:
            raise ValueError(problem)
        return n

    def _room_problem(self, engine, prompt_tokens: int) -> str | None:
        sk = self.skeleton(engine)
        last_free = max((s + w - 1 for s, w in sk.holes if w), default=-1)
        canvases = last_free // engine.canvas_length + 1 if last_free >= 0 else 0
        limit = engine.config.max_position_embeddings
        if prompt_tokens + canvases * engine.canvas_length <= limit:
            return None
        return (f"prompt ({prompt_tokens} tokens) plus the JSON skeleton ({canvases} canvases of "
                f"{engine.canvas_length}) exceeds the model's {limit} positions")

    def skeleton(self, engine) -> Skeleton:
        """The skeleton for ``engine``'s tokenizer (masks on its device), built once per engine."""
        return self._prepared(engine)[0]

    def _prepared(self, engine) -> tuple[Skeleton, Any]:
        if engine not in self._cache:
            stop = [*engine.eos_ids, engine.config.pad_token_id]
            sk = build_skeleton(self.root, engine._need_tokenizer(), engine.config.vocab_size, stop)
            sk.masks = sk.masks.to(engine.device)
            self._cache[engine] = (sk, schema_validator(self.schema))
        return self._cache[engine]

    def generate(self, engine, prompts: list[str], params, seeds: list[int]):
        """One ``GenerationResult`` (``text``: the JSON) or error message per prompt, in order.

        ``token_ids`` are the hole positions' tokens (what the model denoised); ``tokens_per_pass`` counts them;
        ``finish_reason`` is ``"eos"``: a skeleton always completes.
        """
        from engine import GenerationResult

        sk, validator = self._prepared(engine)
        prompt_ids = engine.encode_prompts(prompts, chat=True)
        answers: list = [self._room_problem(engine, len(ids)) for ids in prompt_ids]  # the worker checked it too
        todo = [i for i, problem in enumerate(answers) if problem is None]
        if not todo:
            return answers
        results = engine.denoise_canvases([prompt_ids[i] for i in todo], [sk.known] * len(todo), params,
                                          seeds=[seeds[i] for i in todo], allowed=[sk.allowed] * len(todo),
                                          allowed_masks=sk.masks)
        for i, res in zip(todo, results):
            text = render(sk, res.token_ids)
            problem = next(iter(validator.iter_errors(json.loads(text))), None)
            if problem is not None:
                where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in problem.absolute_path)
                answers[i] = f"output does not validate against task.schema at ${where}: {problem.message}"
                continue
            answers[i] = GenerationResult(
                text=text, token_ids=list(res.free_ids), num_canvases=res.num_canvases, num_passes=res.num_passes,
                tokens_per_pass=res.tokens_per_pass, seconds=res.seconds, finish_reason="eos",
                num_self_corrections=res.num_self_corrections)
        return answers

    def describe(self) -> dict:
        return {"kind": self.kind, "instruction": self.instruction, "schema": self.schema}
