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
import weakref
from typing import Any

from ..engine import GenerationResult
from .base import PromptPlan, RowError, Task, register
from .schema_subset import SchemaError, Widths, compile_schema, schema_validator
from .skeleton import MAX_LAYOUT_POSITIONS, Skeleton, build_skeleton, layout_bound, render

DEFAULT_INSTRUCTION = "Extract the fields as JSON."


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

    def count_tokens(self, engine, plan: PromptPlan) -> int:
        """The prompt's tokens; raises ``ValueError`` (an error row) when the skeleton's canvases do not fit after
        it within the model's positions."""
        n = super().count_tokens(engine, plan)
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

    def execute(self, engine, plans: list[PromptPlan], params, seeds: list[int]) -> list:
        """One ``Result`` (``text``: the JSON) or ``RowError`` per plan, in order.

        ``token_ids`` are the hole positions' tokens (what the model denoised); ``tokens_per_pass`` counts them;
        ``finish_reason`` is ``"eos"``: a skeleton always completes.
        """
        sk, validator = self._prepared(engine)
        answers: list = [self._fits(engine, p) for p in plans]
        todo = [i for i, problem in enumerate(answers) if problem is None]
        if not todo:
            return answers
        prompt_ids = engine.encode_prompts([plans[i].prompt for i in todo], chat=True)
        results = engine.denoise_canvases(prompt_ids, [sk.known] * len(todo), params,
                                          seeds=[seeds[i] for i in todo], allowed=[sk.allowed] * len(todo),
                                          allowed_masks=sk.masks)
        for i, res in zip(todo, results, strict=True):
            answers[i] = self._answer(sk, validator, res)
        return answers

    def _answer(self, sk: Skeleton, validator, res):
        """The row's ``Result``, or a ``RowError`` when its JSON does not validate (ruled out by construction)."""
        text = render(sk, res.token_ids)
        problem = next(iter(validator.iter_errors(json.loads(text))), None)
        if problem is not None:
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in problem.absolute_path)
            return RowError(f"output does not validate against task.schema at ${where}: {problem.message}")
        return GenerationResult(
            text=text, token_ids=list(res.free_ids), num_canvases=res.num_canvases, num_passes=res.num_passes,
            tokens_per_pass=res.tokens_per_pass, seconds=res.seconds, finish_reason="eos",
            num_self_corrections=res.num_self_corrections)

    def describe(self) -> dict:
        return {"kind": self.kind, "instruction": self.instruction, "schema": self.schema}
