"""Generation for Serve: a batch of rows through the engine's own loop (``generate_ids``, the scheduler), one call
per group of equal sampling settings (seed aside), each commit streamed from the scheduler's commit events.

A committed canvas is never re-encoded: the scheduler keeps each row's prefix in its KV cache, as for
``redraft run``, so a request's text equals the bulk job's for the same prompt, seed and parameters (a row's
seed in a job is ``engine.tasks.seeds.row_seed(sampling.seed, id)``). A stop string or a client that left ends the
row at its next canvas boundary (the commit event answers "stop"). A row's text does not depend on which other
rows share its batch (up to the rounding of batched kernels).

Infill (``suffix``) and span edits are not generated from a prompt: their holes sit in clamped canvases
(``EditWork``, ``run_edit_works``), through the same code path as the bulk ``infill`` / ``edit`` tasks.

No Ray in this module (the Serve deployment runs ``generate_rows`` and ``run_edit_works`` in a worker thread).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

from .metrics import record_engine_batch, record_generation


def rows_usage(rows: list["Row"]) -> dict:
    """OpenAI's ``usage`` of generated rows: prompt, completion and total tokens."""
    prompt = sum(len(r.prompt_ids) for r in rows)
    completion = sum(len(r.tokens) for r in rows)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def result_stats(result) -> dict:
    """A ``GenerationResult``'s denoising figures, as ``Row.stats`` reports them for generated rows."""
    return {"num_canvases": result.num_canvases, "num_passes": result.num_passes,
            "tokens_per_pass": result.tokens_per_pass, "num_self_corrections": result.num_self_corrections,
            "seconds": round(result.seconds, 6)}


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


def generate_rows(engine, rows: list[Row], tags: dict | None = None) -> None:
    """Generate ``rows`` until each is done; results are left on the rows.

    Rows with equal sampling settings (seed aside) share one engine call, so they share every denoising pass.
    A failing call marks its rows with ``error`` (other groups go on).
    """
    groups: dict = {}
    for row in rows:
        if not row.done:
            groups.setdefault(dataclasses.replace(row.params, seed=0), []).append(row)
    for params, group in groups.items():
        _run_group(engine, params, group, tags)


def _run_group(engine, params, group: list[Row], tags: dict | None) -> None:
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

    def on_commit(i: int, tokens: list[int], last: bool) -> bool:
        row = group[i]
        row.tokens, row.num_canvases, row.canvas_passes = list(tokens), row.num_canvases + 1, 0
        row.text, stopped = cut_at_stop(engine.tokenizer.decode(row.tokens), row.stop)
        if stopped:
            row.finish = "stop"
        if not last:
            _emit_commit(row)  # the last canvas is sent once the row's finish is known
        return stopped or row.cancelled

    started = time.perf_counter()
    try:
        results = engine.generate_ids([row.prompt_ids for row in group], params,
                                      seeds=[row.params.seed for row in group], on_pass=on_pass, on_commit=on_commit)
    except Exception as err:  # noqa: BLE001 - this group's failure; the rest of the batch goes on
        for row in group:
            row.error = f"{type(err).__name__}: {err}"
        return
    if tags is not None:
        record_engine_batch(len(group), tags)
    elapsed = time.perf_counter() - started
    for row, res in zip(group, results):
        row.tokens, row.num_canvases, row.num_passes = list(res.token_ids), res.num_canvases, res.num_passes
        row.num_self_corrections, row.seconds = res.num_self_corrections, res.seconds if res.seconds > 0 else elapsed
        row.text, stopped = cut_at_stop(engine.tokenizer.decode(row.tokens), row.stop)
        row.finish = "stop" if stopped or res.finish_reason in ("eos", "stop") else "length"
        _emit_commit(row)


# --------------------------------------------------------------------------------------------- clamped canvases

@dataclass
class EditWork:
    """One infill or edit job of a request (``engine.tasks.editing.EditJob``, holes and prompt head already laid out
    by ``InfillTask.layout`` / ``EditTask.layout``), with the request's sampling settings and seed. ``run_edit_works`` leaves
    the job's ``GenerationResult`` on ``result`` and its hole fills on ``fills``, or the failure on ``error``."""

    job: object
    params: object
    context_tokens: int
    result: object = None
    fills: list[str] | None = None
    error: str | None = None
    cancelled: bool = False  # the client went away; set from the event loop, read between windows


class _Abandoned(Exception):
    """Every work of a group was cancelled: stop its engine calls at the next window."""


class _StopWhenAbandoned:
    """The engine as one group's ``run_edit_jobs_with_fills`` call sees it: once every work of the group is
    cancelled, its denoising call stops at the next pass (``_Abandoned``, raised from ``on_pass``; the engine keeps
    no state between calls) and no further window starts. The prompts' prefill, before the first pass, runs to
    its end."""

    def __init__(self, engine, group: list[EditWork]):
        self._engine, self._group = engine, group

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def _check(self, *_args) -> None:
        if all(w.cancelled for w in self._group):
            raise _Abandoned

    def denoise_canvases(self, *args, **kwargs):
        self._check()
        inner = kwargs.get("on_pass")

        def on_pass(*pass_args):
            self._check()
            if inner is not None:
                inner(*pass_args)

        return self._engine.denoise_canvases(*args, **{**kwargs, "on_pass": on_pass})


def run_edit_works(engine, works: list[EditWork], tags: dict | None = None) -> None:
    """Run ``works`` through ``engine.tasks.editing.run_edit_jobs_with_fills``, one call per group of equal sampling
    settings (seed aside) and context size, so concurrent requests share engine calls and each job still draws
    only from its own seed. A failing call marks its group's works with ``error`` (other groups go on). Works
    whose client went away (``cancelled``) are left out; a group whose works are all cancelled stops at its next
    denoising pass (a group shared with a live work goes on)."""
    from engine.tasks.editing import run_edit_jobs_with_fills

    groups: dict = {}
    for work in works:
        if not work.cancelled:
            groups.setdefault((dataclasses.replace(work.params, seed=0), work.context_tokens), []).append(work)
    for (params, context_tokens), group in groups.items():
        try:
            out = run_edit_jobs_with_fills(_StopWhenAbandoned(engine, group), [w.job for w in group], params,
                                           [w.params.seed for w in group], context_tokens)
        except _Abandoned:
            for work in group:
                work.error = "cancelled: the client went away"
            continue
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
