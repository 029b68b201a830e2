"""What each row of a generation call asks for (``RowPlan``) and what it got (``RowOutcome``), and the checks that
turn a call's arguments into plans: free generation (``plan_generation``) and clamped layouts (``plan_clamped``,
errors name the row and position). The scheduler (``engine/scheduler.py``) runs the plans."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import InputError
from .sampling.params import SamplingParams

FREE = -1


@dataclass
class RowPlan:
    """What one row asks for. ``known`` None: free generation, ended by EOS or the token budget within
    ``max_canvases``. Otherwise exactly ``max_canvases`` canvases of ``known`` (at least that many whole
    canvases long) are denoised, and EOS has no special meaning."""

    prompt: list[int]
    seed: int
    max_canvases: int
    known: list[int] | None = None
    allowed: list[int] | None = None


@dataclass
class RowOutcome:
    tokens: list[int] = field(default_factory=list)
    num_canvases: int = 0
    num_passes: int = 0
    num_corrections: int = 0
    seconds: float = 0.0
    finish_reason: str = "length"
    error: str | None = None  # the row's canvas produced NaN/Inf (the engine raises NonFiniteError)


def plan_generation(prompts: list[list[int]], seeds: list[int], params: SamplingParams, canvas_length: int,
                    max_positions: int) -> list[RowPlan]:
    want = math.ceil(params.max_new_tokens / canvas_length)
    return [RowPlan(prompt=p, seed=s, max_canvases=min(want, (max_positions - len(p)) // canvas_length))
            for p, s in zip(prompts, seeds)]


def plan_clamped(prompts: list[list[int]], seeds: list[int], known: list[list[int]],
                 allowed: list[list[int] | None] | None, num_masks: int, vocab_size: int, pad_id: int,
                 canvas_length: int, max_positions: int) -> list[RowPlan]:
    """Validate clamped layouts (errors name the row and position) and pad them to whole canvases."""
    if len(known) != len(prompts):
        raise InputError(f"got {len(known)} known layouts for {len(prompts)} prompts")
    if allowed is not None and len(allowed) != len(prompts):
        raise InputError(f"got {len(allowed)} allowed layouts for {len(prompts)} prompts")
    plans = []
    for r, (prompt, seed, row_known) in enumerate(zip(prompts, seeds, known)):
        row_known = list(row_known)
        if not row_known:
            raise InputError(f"row {r}: known layout is empty")
        bad = next((j for j, t in enumerate(row_known) if not (t == FREE or 0 <= t < vocab_size)), None)
        if bad is not None:
            raise InputError(f"row {r}: known[{bad}] = {row_known[bad]} is neither FREE (-1) nor a token id in "
                             f"[0, {vocab_size})")
        # canvases after the last free position hold nothing to denoise: they are not run
        last_free = max((j for j, t in enumerate(row_known) if t == FREE), default=-1)
        n_canvases = (last_free // canvas_length + 1) if last_free >= 0 else 0
        if len(prompt) + n_canvases * canvas_length > max_positions:
            raise InputError(f"row {r}: prompt ({len(prompt)} tokens) plus {n_canvases} canvases of {canvas_length} "
                             f"exceeds the model's {max_positions} positions")
        pad = max(0, n_canvases * canvas_length - len(row_known))
        row_allowed = None if allowed is None else allowed[r]
        if row_allowed is not None:
            row_allowed = list(row_allowed)
            if len(row_allowed) != len(row_known):
                raise InputError(f"row {r}: allowed has {len(row_allowed)} entries, known has {len(row_known)}")
            bad = next((j for j, m in enumerate(row_allowed) if not -1 <= m < num_masks), None)
            if bad is not None:
                raise InputError(f"row {r}: allowed[{bad}] = {row_allowed[bad]} is not -1 or a mask index in "
                                 f"[0, {num_masks})")
            row_allowed += [-1] * pad
        plans.append(RowPlan(prompt=prompt, seed=seed, max_canvases=n_canvases, known=row_known + [pad_id] * pad,
                             allowed=row_allowed))
    return plans
