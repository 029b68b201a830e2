"""Step-level continuous batching of canvases: the loop behind ``generate_ids`` and ``denoise_canvases``.

Up to ``max_inflight`` rows are in the batch at once, each denoising its own canvas. Every pass runs the
decoder over all of them; a row whose canvas stops (stable and confident, or out of passes) is handled at once,
without waiting for the others:

* its canvas's argmax is taken; a free-generation row keeps the tokens up to EOS;
* if the row needs another canvas, the canvas is committed (the encoder appends its K/V to that row's cache)
  and a fresh canvas starts on the next pass;
* otherwise the row leaves the batch, and a waiting row is prefilled into the freed place before the next pass.

Rows therefore sit at different passes and different cache lengths; per-row temperatures, cache lengths and
masks handle that. Every random draw of a row comes from its own ``torch.Generator`` in a fixed order (canvas
init, then per pass: candidates, then noise), so a row's output does not depend on which rows share its batch,
beyond the fp32 rounding of batched kernels (grouped-GEMM group sizes and attention masks move a row's logits by
about 1e-5; a draw that lands within that distance of a boundary can pick another token).

Clamped canvases: a row may carry a ``known`` layout, one entry per canvas position: ``FREE`` (-1) positions are
denoised, every other entry is a token that is never renoised or changed. Clamping works on the logits: a known
position's logits become a one-hot on its token, so its sample and argmax are that token, its entropy is zero
(it takes none of the acceptance budget) and its self-conditioning signal is the token's own embedding. An
``allowed`` layout restricts free positions to a set of tokens (rows of a boolean mask table) by pushing every
other logit to -1e30 before sampling.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from .errors import InputError
from .kv_cache import KVCache
from .sampling.accept import accept_mask
from .sampling.entropy_bound import StopTracker, position_chunk, sample_pass
from .sampling.params import SamplingParams

FREE = -1
_NEG = -1e30  # finite: softmax gives exactly 0 and p * log p stays 0 (an -inf would make it NaN)


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


@dataclass
class _Live:
    """A row in the batch: which row, which canvas, passes left on it, its clamps for this canvas."""

    row: int
    gen: torch.Generator
    canvas_index: int = 0
    steps_left: int = 0
    known: torch.Tensor | None = None  # [C] long, FREE where denoised
    known_pos: torch.Tensor | None = None  # positions of the known tokens
    restricted_pos: list[int] | None = None  # free positions restricted by a mask ...
    restricted_masks: torch.Tensor | None = None  # ... and their rows of the mask table
    free: int = 0

    @property
    def clamped(self) -> bool:
        return self.known is not None or self.restricted_pos is not None


class Scheduler:
    def __init__(self, engine, params: SamplingParams, plans: list[RowPlan], max_inflight: int | None = None,
                 allowed_masks: torch.Tensor | None = None, on_pass=None, on_commit=None):
        self.engine, self.model, self.params, self.plans = engine, engine.model, params, plans
        cfg = engine.config
        self.c, self.v, self.device = cfg.canvas_length, cfg.vocab_size, engine.device
        self.max_inflight = max(1, min(max_inflight or len(plans), len(plans)))
        self.masks = None if allowed_masks is None else allowed_masks.to(self.device, torch.bool)
        self.on_pass = on_pass
        # on_commit(row, tokens, last) after every finished canvas of a free-generation row; a True answer ends
        # the row there (finish_reason 'stop': a caller's stop string, or its client left)
        self.on_commit = on_commit
        self.eos = torch.tensor(engine.eos_ids, device=self.device)
        self.chunk = position_chunk(self.v)
        self.capacity = max(len(p.prompt) + p.max_canvases * self.c for p in plans)
        self.out = [RowOutcome() for _ in plans]

    # ------------------------------------------------------------------------------------------- batch state
    def _start_canvas(self, live: _Live) -> torch.Tensor:
        """Set up ``live``'s next canvas; returns its initial (uniform random) tokens with clamps applied."""
        plan, c = self.plans[live.row], self.c
        live.steps_left = self.params.max_denoising_steps
        tokens = torch.randint(0, self.v, (c,), generator=live.gen, device=self.device)
        live.known = live.known_pos = live.restricted_pos = live.restricted_masks = None
        live.free = c
        if plan.known is not None:
            span = slice(live.canvas_index * c, (live.canvas_index + 1) * c)
            known = torch.tensor(plan.known[span], dtype=torch.long, device=self.device)
            if bool((known != FREE).any()):
                live.known, live.known_pos = known, (known != FREE).nonzero().flatten()
                live.free = int((known == FREE).sum())
                tokens = torch.where(known == FREE, tokens, known)
            if plan.allowed is not None:
                allowed = torch.tensor(plan.allowed[span], dtype=torch.long, device=self.device)
                allowed = torch.where(known == FREE, allowed, -1)  # masks do not apply at known positions
                restricted = (allowed >= 0).nonzero().flatten()
                if restricted.numel():
                    live.restricted_pos, live.restricted_masks = restricted.tolist(), allowed[restricted]
        return tokens

    def _prefill(self, rows: list[int]) -> KVCache:
        prompts = [self.plans[r].prompt for r in rows]
        # every cache gets the call's whole capacity, so caches of rows admitted later concatenate without regrowing
        return self.engine._prefill(prompts, self.capacity - max(len(p) for p in prompts))

    # ------------------------------------------------------------------------------------------- clamps
    def _clamp_logits(self, logits: torch.Tensor) -> None:
        """Apply each row's allowed-token masks and known tokens to this pass's logits, in place."""
        for b, live in enumerate(self.live):
            if live.restricted_pos is not None:
                restricted, mask_ids = live.restricted_pos, live.restricted_masks
                for s in range(0, len(restricted), self.chunk):
                    pos = restricted[s:s + self.chunk]
                    block = logits[b, pos]
                    block.masked_fill_(~self.masks[mask_ids[s:s + self.chunk]], _NEG)
                    logits[b, pos] = block
            if live.known is not None:
                pos = live.known_pos
                for s in range(0, pos.shape[0], self.chunk):
                    p = pos[s:s + self.chunk]
                    logits[b, p] = _NEG
                    logits[b, p, live.known[p]] = 0.0

    # ------------------------------------------------------------------------------------------- the loop
    @torch.no_grad()
    def run(self) -> list[RowOutcome]:
        params, c = self.params, self.c
        start = time.perf_counter()
        queue = deque(r for r, plan in enumerate(self.plans) if plan.max_canvases > 0)
        self.live: list[_Live] = []
        cache: KVCache | None = None
        canvas = soft = prev_acc = nonfinite = None
        tracker = StopTracker(0, c, params.stability_threshold, params.confidence_threshold, self.device)
        while queue or self.live:
            # admit waiting rows into free places (a canvas boundary for the rows that just left)
            room = self.max_inflight - len(self.live)
            if room > 0 and queue:
                new = [queue.popleft() for _ in range(min(room, len(queue)))]
                new_cache = self._prefill(new)
                cache = new_cache if cache is None else cache.concat(new_cache)
                lives = [_Live(r, torch.Generator(device=self.device).manual_seed(int(self.plans[r].seed)))
                         for r in new]
                tokens = torch.stack([self._start_canvas(lv) for lv in lives])
                self.live += lives
                canvas = tokens if canvas is None else torch.cat([canvas, tokens])
                d = self.engine.config.hidden_size
                new_soft = torch.zeros(len(new), c, d, dtype=self.model.dtype, device=self.device)
                soft = new_soft if soft is None else torch.cat([soft, new_soft])
                new_acc = torch.zeros(len(new), c, dtype=torch.bool, device=self.device)
                prev_acc = new_acc if prev_acc is None else torch.cat([prev_acc, new_acc])
                new_bad = torch.zeros(len(new), dtype=torch.long, device=self.device)
                nonfinite = new_bad if nonfinite is None else torch.cat([nonfinite, new_bad])
                tracker.extend(len(new))

            # one denoising pass over every canvas in flight
            b = len(self.live)
            # every row on the first pass of its canvas: no self-conditioning signal at all (zeros add exactly 0)
            all_fresh = all(lv.steps_left == params.max_denoising_steps for lv in self.live)
            hidden = self.model.decode(canvas, cache, None if all_fresh else soft)
            logits = self.engine._logits(hidden)
            if any(lv.clamped for lv in self.live):
                self._clamp_logits(logits)
            temps = torch.tensor([params.temperature(lv.steps_left) for lv in self.live], device=self.device)
            gens = [lv.gen for lv in self.live]
            # the entropy-bound sampler does not read the top probabilities: skip them
            top = None if params.sampler == "entropy_bound" else torch.empty(b, c, device=self.device)
            cand, argmax, entropy, soft = sample_pass(logits, temps, gens, self.model.soft_embeddings, self.chunk, top)
            del logits
            # garbage activations: one [B] flag per pass on device, read with the canvas's tokens when it ends (no
            # extra host sync per pass). 1: NaN/Inf hidden states; 2: NaN/Inf logits (their NaN reaches the entropy);
            # 4: all-zero hidden states (an overflow inside a norm, x*x = Inf, zeroes the row instead of NaN)
            flat = hidden.flatten(1)
            nonfinite |= (~torch.isfinite(flat).all(1)).long() | 4 * (flat == 0).all(1).long()
            nonfinite |= 2 * (~torch.isfinite(entropy).all(1)).long()
            del hidden
            noise = torch.stack([torch.randint(0, self.v, (c,), generator=g, device=self.device) for g in gens])
            accepted = accept_mask(entropy, top, params)
            canvas = torch.where(accepted, cand, noise)
            fixed = (prev_acc & ~accepted).sum(-1).tolist()
            prev_acc = accepted
            for lv, k in zip(self.live, fixed):
                self.out[lv.row].num_corrections += k
                self.out[lv.row].num_passes += 1
                lv.steps_left -= 1
            if self.on_pass is not None:
                self.on_pass([lv.row for lv in self.live], argmax)
            if params.fixed_steps:
                done = [lv.steps_left == 0 for lv in self.live]
            else:  # (a canvas clamped everywhere has zero entropy: it stops once stable)
                free = torch.tensor([max(lv.free, 1) for lv in self.live], dtype=torch.float32, device=self.device)
                stop = tracker.update(torch.arange(b, device=self.device), argmax, entropy, free).tolist()
                done = [s or lv.steps_left == 0 for s, lv in zip(stop, self.live)]
            if not any(done):
                continue

            # canvases that are done: take their tokens; commit those that continue, drop rows that finished
            now = time.perf_counter() - start
            finished_rows, commit = self._finish_canvases(argmax, done, now, nonfinite)
            if commit:
                idx = torch.tensor(commit, device=self.device)
                self.model.encode(argmax[idx], cache, rows=commit)
                for i in commit:
                    lv = self.live[i]
                    lv.canvas_index += 1
                    canvas[i] = self._start_canvas(lv)
                    soft[i] = 0
                    prev_acc[i] = False
                tracker.reset(idx)
            if finished_rows:
                keep = [i for i in range(b) if i not in finished_rows]
                self.live = [self.live[i] for i in keep]
                if not keep:
                    cache = canvas = soft = prev_acc = nonfinite = None
                    tracker.keep(torch.zeros(0, dtype=torch.long, device=self.device))
                    continue
                kt = torch.tensor(keep, device=self.device)
                cache = cache.select(keep)
                canvas, soft, prev_acc, nonfinite = canvas[kt], soft[kt], prev_acc[kt], nonfinite[kt]
                tracker.keep(kt)
        return self.out

    def _finish_canvases(self, argmax: torch.Tensor, done: list[bool], now: float,
                         nonfinite: torch.Tensor) -> tuple[set[int], list[int]]:
        """Record the tokens of every finished canvas; returns (batch indices of rows that are done, batch
        indices of rows whose canvas is committed and who go on). A canvas that saw NaN/Inf ends its row with
        ``RowOutcome.error``."""
        params, c = self.params, self.c
        idx = [i for i, d in enumerate(done) if d]
        idx_t = torch.tensor(idx, device=self.device)
        rows_argmax = argmax[idx_t]
        free_rows = [j for j, i in enumerate(idx) if self.plans[self.live[i].row].known is None]
        first_eos = [c] * len(idx)
        if free_rows and not params.ignore_eos:
            sub = rows_argmax[torch.tensor(free_rows, device=self.device)]
            is_eos = torch.isin(sub, self.eos)
            found = torch.where(is_eos.any(-1), is_eos.int().argmax(-1), c).tolist()
            for j, f in zip(free_rows, found):
                first_eos[j] = f
        values = torch.cat([rows_argmax, nonfinite[idx_t, None]], 1).tolist()  # one transfer: tokens and flags
        finished, commit = set(), []
        for j, i in enumerate(idx):
            lv = self.live[i]
            plan, out = self.plans[lv.row], self.out[lv.row]
            out.num_canvases += 1
            flags = values[j].pop()
            if flags:
                what = " and ".join(n for bit, n in ((1, "non-finite (NaN/Inf) hidden states"),
                                                     (2, "non-finite (NaN/Inf) logits"),
                                                     (4, "all-zero hidden states")) if flags & bit)
                out.error = (f"{what} in canvas {out.num_canvases}, by pass {out.num_passes}: the model's activations "
                             "overflowed or its weights are broken")
                out.seconds = now
                finished.add(i)
                continue
            if plan.known is not None:
                out.tokens.extend(values[j])
                over = out.num_canvases >= plan.max_canvases
            else:
                take = values[j][:first_eos[j]]
                out.tokens.extend(take[:params.max_new_tokens - len(out.tokens)])
                if first_eos[j] < c:
                    out.finish_reason = "eos"
                    over = True
                else:
                    over = len(out.tokens) >= params.max_new_tokens or out.num_canvases >= plan.max_canvases
                if self.on_commit is not None and self.on_commit(lv.row, out.tokens, over) and not over:
                    out.finish_reason, over = "stop", True
            if over:
                out.seconds = now
                finished.add(i)
            else:
                commit.append(i)
        return finished, commit


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
