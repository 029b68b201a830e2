"""Canvas-by-canvas generation for Serve: a batch of rows advanced one canvas per engine call, so each commit can
be streamed and rows with equal sampling settings share every denoising pass.

Each step asks the engine for one canvas per unfinished row (``generate_ids`` with ``max_new_tokens`` at most one
canvas long), the prompt being the row's prompt plus its tokens so far, which is exactly what the engine's own
multi-canvas loop commits to its cache. Canvas ``k`` of a row draws from seed ``canvas_seed(seed, k)``; canvas 0
uses the request's seed itself, so a one-canvas answer equals ``engine.generate_ids`` with that seed. A row's text
does not depend on which other rows share its batch.

Infill (``suffix``) and span edits are not generated canvas by canvas from a prompt: their holes sit in clamped
canvases (``EditWork``, ``run_edit_works``), through the same code path as the bulk ``infill`` / ``edit`` tasks.

No Ray in this module (the Serve deployment runs ``generate_rows`` and ``run_edit_works`` in a worker thread).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable

from .metrics import record_engine_batch, record_generation


def canvas_seed(seed: int, canvas: int) -> int:
    """Seed of canvas ``canvas`` of a row seeded ``seed`` (canvas 0: the seed itself)."""
    if canvas == 0:
        return seed
    digest = hashlib.sha256(f"{seed}:{canvas}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


@dataclass
class Row:
    """One prompt being answered.

    Args:
        prompt_ids: the prompt's token ids.
        params: ``SamplingParams``; ``max_new_tokens`` is this row's budget, ``seed`` its seed.
        stop: strings that end the text (the text is cut before the first one).
        drafts: emit a ``draft`` event after every denoising pass.
        emit: thread-safe event sink (``{"kind": "commit", "delta"}`` after each canvas, ``{"kind": "draft",
            "text", "canvas", "pass"}`` per pass when ``drafts``); None: no events.
    """

    prompt_ids: list[int]
    params: object
    stop: list[str] | None = None
    drafts: bool = False
    emit: Callable[[dict], None] | None = None
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0  # characters of ``text`` already emitted
    num_canvases: int = 0
    num_passes: int = 0
    num_self_corrections: int = 0
    seconds: float = 0.0
    canvas_passes: int = 0
    finish: str | None = None  # "stop" | "length" (OpenAI's names) once done
    error: str | None = None
    cancelled: bool = False

    @property
    def done(self) -> bool:
        return self.finish is not None or self.error is not None or self.cancelled

    def stats(self) -> dict:
        return {"num_canvases": self.num_canvases, "num_passes": self.num_passes,
                "tokens_per_pass": len(self.tokens) / max(self.num_passes, 1),
                "num_self_corrections": self.num_self_corrections, "seconds": round(self.seconds, 6)}

    def result(self):
        """The row as one ``GenerationResult`` (for metrics)."""
        from engine import GenerationResult

        return GenerationResult(text=self.text, token_ids=list(self.tokens), num_canvases=self.num_canvases,
                                num_passes=self.num_passes, tokens_per_pass=len(self.tokens) / max(self.num_passes, 1),
                                seconds=self.seconds, finish_reason="eos" if self.finish == "stop" else "length",
                                num_self_corrections=self.num_self_corrections)


def cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    """``(text cut before the first stop string, whether one was found)``."""
    if not stop:
        return text, False
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[:min(hits)], True) if hits else (text, False)


def _emit_commit(row: Row) -> None:
    """Send the text committed since the last event. While the row runs, hold back what a later canvas could
    still change: a trailing partial UTF-8 character, and the last ``len(longest stop) - 1`` characters (a stop
    string may straddle canvases)."""
    if row.emit is None:
        return
    upto = len(row.text)
    if not row.done:
        upto = len(row.text.rstrip("\ufffd"))
        if row.stop:
            upto = max(row.sent, upto - (max(len(s) for s in row.stop) - 1))
    if upto > row.sent:
        row.emit({"kind": "commit", "delta": row.text[row.sent:upto]})
        row.sent = upto


def _finish_canvas(engine, row: Row, res) -> None:
    row.tokens.extend(res.token_ids)
    row.num_canvases += res.num_canvases
    row.num_passes += res.num_passes
    row.num_self_corrections += res.num_self_corrections
    row.seconds += res.seconds
    row.text, stopped = cut_at_stop(engine.tokenizer.decode(row.tokens), row.stop)
    if stopped or res.finish_reason == "eos":
        row.finish = "stop"
    elif len(row.tokens) >= row.params.max_new_tokens or not res.token_ids \
            or len(row.prompt_ids) + len(row.tokens) > engine.max_prompt_tokens:
        row.finish = "length"
    _emit_commit(row)


def generate_rows(engine, rows: list[Row], tags: dict | None = None) -> None:
    """Advance ``rows`` canvas by canvas until each is done; results are left on the rows.

    Rows with equal sampling settings (seed aside) share one engine call per canvas. A failing call marks its
    rows with ``error`` (other rows go on).
    """
    while True:
        active = [r for r in rows if not r.done]
        if not active:
            return
        groups: dict = {}
        for row in active:
            budget = min(engine.canvas_length, row.params.max_new_tokens - len(row.tokens))
            key = dataclasses.replace(row.params, max_new_tokens=budget, seed=0)
            groups.setdefault(key, []).append(row)
        for params, group in groups.items():
            _step(engine, params, group, tags)


def _step(engine, params, group: list[Row], tags: dict | None) -> None:
    for row in group:
        row.canvas_passes = 0

    eos = set(engine.eos_ids)

    def on_pass(indices: list[int], argmax_BC) -> None:
        for k, i in enumerate(indices):
            row = group[i]
            row.canvas_passes += 1
            if row.drafts and row.emit is not None:
                ids = argmax_BC[k].tolist()
                cut = next((j for j, t in enumerate(ids) if t in eos), len(ids))
                row.emit({"kind": "draft", "text": engine.tokenizer.decode(row.tokens + ids[:cut]),
                          "canvas": row.num_canvases, "pass": row.canvas_passes})

    prompts = [row.prompt_ids + row.tokens for row in group]
    seeds = [canvas_seed(row.params.seed, row.num_canvases) for row in group]
    started = time.perf_counter()
    try:
        results = engine.generate_ids(prompts, params, seeds=seeds, on_pass=on_pass)
    except Exception as err:  # noqa: BLE001 - this group's failure; the rest of the batch goes on
        for row in group:
            row.error = f"{type(err).__name__}: {err}"
        return
    if tags is not None:
        record_engine_batch(len(group), tags)
    elapsed = time.perf_counter() - started
    for row, res in zip(group, results):
        if res.seconds <= 0:  # rows the engine never ran (no room) still took the call's time
            res = dataclasses.replace(res, seconds=elapsed)
        _finish_canvas(engine, row, res)


# --------------------------------------------------------------------------------------------- clamped canvases

@dataclass
class EditWork:
    """One infill or edit job of a request (``engine.tasks.editing.EditJob``, holes and prompt head already planned
    by ``InfillTask`` / ``EditTask``), with the request's sampling settings and seed. ``run_edit_works`` leaves
    the job's ``GenerationResult`` on ``result`` and its hole fills on ``fills``, or the failure on ``error``."""

    job: object
    params: object
    context_tokens: int
    result: object = None
    fills: list[str] | None = None
    error: str | None = None


def run_edit_works(engine, works: list[EditWork], tags: dict | None = None) -> None:
    """Run ``works`` through ``engine.tasks.editing.run_edit_jobs_with_fills``, one call per group of equal sampling
    settings (seed aside) and context size, so concurrent requests share engine calls and each job still draws
    only from its own seed. A failing call marks its group's works with ``error`` (other groups go on)."""
    from engine.tasks.editing import run_edit_jobs_with_fills

    groups: dict = {}
    for work in works:
        groups.setdefault((dataclasses.replace(work.params, seed=0), work.context_tokens), []).append(work)
    for (params, context_tokens), group in groups.items():
        try:
            out = run_edit_jobs_with_fills(engine, [w.job for w in group], params,
                                           [w.params.seed for w in group], context_tokens)
        except Exception as err:  # noqa: BLE001 - this group's failure; the rest of the batch goes on
            for work in group:
                work.error = f"{type(err).__name__}: {err}"
            if tags is not None:
                record_generation([], tags, errors=len(group))
            continue
        for work, (result, fills) in zip(group, out, strict=True):
            work.result, work.fills = result, fills
        if tags is not None:
            record_generation([w.result for w in group], tags)
