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
    """A row in the batch: which row, its generator, which canvas, passes left on it (the host's copy)."""

    row: int
    gen: torch.Generator
    canvas_index: int = 0
    steps_left: int = 0


class Scheduler:
    """The loop's batch state is one tensor per field, one row per live row in ``self.live``'s order, so a pass
    runs the same ops whatever the batch: ``canvas`` [B, C] tokens, ``soft`` [B, C, D] self-conditioning,
    ``prev_acc`` [B, C] the last pass's accepted positions, ``nonfinite`` [B] flags, ``corr`` [B]
    self-corrections not yet read, ``steps`` [B] passes left, ``free`` [B] denoised positions (at least 1), and
    in clamped calls ``known`` [B, C] (``FREE`` where denoised) and ``allowed`` [B, C] (a mask-table row, -1 = any).
    The host reads the device at most once per pass (flags, corrections, stop decisions, first EOS); the tokens of
    finished canvases stay on the device until the end of the call (with ``on_commit``: read with the pass)."""

    def __init__(self, engine, params: SamplingParams, plans: list[RowPlan], max_inflight: int | None = None,
                 allowed_masks: torch.Tensor | None = None, on_pass=None, on_commit=None):
        self.engine, self.model, self.params, self.plans = engine, engine.model, params, plans
        cfg = engine.config
        self.c, self.v, self.device = cfg.canvas_length, cfg.vocab_size, engine.device
        self.max_inflight = max(1, min(max_inflight or len(plans), len(plans)))
        self.masks = None if allowed_masks is None else allowed_masks.to(self.device, torch.bool)
        self.on_pass = on_pass
        # on_commit(row, tokens, last) after every finished canvas of a free-generation row; a True answer ends
        # the row there (finish_reason 'stop': a caller's stop string, or its client left). With it, the pass's
        # one host read also carries the argmax canvases (the caller needs the tokens at once)
        self.on_commit = on_commit
        self.eos = torch.tensor(engine.eos_ids, device=self.device)
        self.chunk = position_chunk(self.v)
        self.capacity = max(len(p.prompt) + p.max_canvases * self.c for p in plans)
        self.out = [RowOutcome() for _ in plans]
        self.clamped = any(p.known is not None for p in plans)
        self.restricting = self.masks is not None and any(p.allowed is not None for p in plans)
        self.take_eos = not params.ignore_eos and any(p.known is None for p in plans)
        # the pass temperature by passes left, as the host computes it (one lookup per pass, no transfer)
        self.temps = torch.tensor([params.temperature(s) for s in range(params.max_denoising_steps + 1)],
                                  device=self.device)
        self.blocks: list[torch.Tensor] = []  # argmax of finished canvases, on device until the end
        self.segments: list[tuple[int, int, int, int]] = []  # (block, index in it, row, tokens kept)
        self.kept = [0] * len(plans)  # tokens kept so far per row

    # ------------------------------------------------------------------------------------------- batch state
    def _start_canvas(self, live: _Live) -> dict:
        """Set up ``live``'s next canvas: its initial (uniform random) tokens with clamps applied, its clamps
        and its count of free positions (from the plan's lists: nothing is read back from the device)."""
        plan, c = self.plans[live.row], self.c
        live.steps_left = self.params.max_denoising_steps
        tokens = torch.randint(0, self.v, (c,), generator=live.gen, device=self.device)
        new = {"free": c}
        if self.clamped:
            known, allowed = [FREE] * c, [-1] * c
            if plan.known is not None:
                span = slice(live.canvas_index * c, (live.canvas_index + 1) * c)
                known = plan.known[span]
                new["free"] = sum(t == FREE for t in known)
                if plan.allowed is not None:  # masks do not apply at known positions
                    allowed = [a if k == FREE else -1 for a, k in zip(plan.allowed[span], known)]
            new["known"] = torch.tensor(known, dtype=torch.long, device=self.device)
            if new["free"] < c:
                tokens = torch.where(new["known"] == FREE, tokens, new["known"])
            new["allowed"] = torch.tensor(allowed, dtype=torch.long, device=self.device)
        new["canvas"] = tokens
        return new

    def _fresh_rows(self, lives: list[_Live]) -> dict[str, torch.Tensor]:
        """Batch state for rows starting a canvas (their first, or the next one after a commit)."""
        starts = [self._start_canvas(lv) for lv in lives]
        n, c, d = len(lives), self.c, self.engine.config.hidden_size
        state = {"canvas": torch.stack([s["canvas"] for s in starts]),
                 "steps": torch.full((n,), self.params.max_denoising_steps, dtype=torch.long, device=self.device),
                 "free": torch.tensor([max(s["free"], 1) for s in starts], dtype=torch.float32, device=self.device),
                 "soft": torch.zeros(n, c, d, dtype=self.model.dtype, device=self.device),
                 "prev_acc": torch.zeros(n, c, dtype=torch.bool, device=self.device)}
        if self.clamped:
            state["known"] = torch.stack([s["known"] for s in starts])
        if self.restricting:
            state["allowed"] = torch.stack([s["allowed"] for s in starts])
        return state

    def _prefill(self, rows: list[int]) -> KVCache:
        prompts = [self.plans[r].prompt for r in rows]
        # every cache gets the call's whole capacity, so caches of rows admitted later concatenate without regrowing
        return self.engine._prefill(prompts, self.capacity - max(len(p) for p in prompts))

    def _admit(self, queue: deque, cache: KVCache | None) -> KVCache | None:
        """Admit waiting rows into free places (a canvas boundary for the rows that just left)."""
        room = self.max_inflight - len(self.live)
        if room <= 0 or not queue:
            return cache
        new = [queue.popleft() for _ in range(min(room, len(queue)))]
        new_cache = self._prefill(new)
        cache = new_cache if cache is None else cache.concat(new_cache)
        lives = [_Live(r, torch.Generator(device=self.device).manual_seed(int(self.plans[r].seed))) for r in new]
        fresh = self._fresh_rows(lives)
        fresh["nonfinite"] = torch.zeros(len(new), dtype=torch.long, device=self.device)
        fresh["corr"] = torch.zeros(len(new), dtype=torch.long, device=self.device)
        self.state = fresh if not self.state else {k: torch.cat([self.state[k], t]) for k, t in fresh.items()}
        self.live += lives
        self.tracker.extend(len(new))
        return cache

    # ------------------------------------------------------------------------------------------- clamps
    def _clamp_logits(self, logits: torch.Tensor) -> None:
        """Apply the rows' allowed-token masks and known tokens to this pass's logits, in place, batched (the
        mask lookup in chunks of positions, so its ``[P, V]`` temporary stays within the sampler's budget)."""
        b, c, v = logits.shape
        if self.restricting:
            flat, allowed = logits.view(b * c, v), self.state["allowed"].view(-1)
            for s in range(0, b * c, self.chunk):
                ids = allowed[s:s + self.chunk]
                banned = ~self.masks[ids.clamp(min=0)]
                banned &= (ids >= 0)[:, None]
                flat[s:s + self.chunk].masked_fill_(banned, _NEG)
        known = self.state["known"]
        is_known = (known != FREE)[..., None]
        logits.masked_fill_(is_known, _NEG)
        at = known.clamp(min=0)[..., None]  # a free position writes its own logit back (token 0) unchanged
        logits.scatter_(-1, at, torch.where(is_known, 0.0, logits.gather(-1, at)))

    # ------------------------------------------------------------------------------------------- the loop
    @torch.no_grad()
    def run(self) -> list[RowOutcome]:
        params, c = self.params, self.c
        start = time.perf_counter()
        queue = deque(r for r, plan in enumerate(self.plans) if plan.max_canvases > 0)
        self.live: list[_Live] = []
        self.state: dict[str, torch.Tensor] = {}
        self.tracker = StopTracker(0, c, params.stability_threshold, params.confidence_threshold, self.device)
        cache: KVCache | None = None
        while queue or self.live:
            cache = self._admit(queue, cache)
            argmax, stop = self._pass(cache)
            done = self._read(argmax, stop)
            if done is None:
                continue
            finished, commit = self._finish_canvases(argmax, done, time.perf_counter() - start)
            cache = self._advance(argmax, cache, finished, commit)
        self._read_tokens()
        return self.out

    def _pass(self, cache: KVCache) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One denoising pass over every canvas in flight; returns the argmax canvases and (adaptive stopping)
        the rows' stop flags, both on device."""
        params, st, b, c = self.params, self.state, len(self.live), self.c
        # every row on the first pass of its canvas: no self-conditioning signal at all (zeros add exactly 0)
        all_fresh = all(lv.steps_left == params.max_denoising_steps for lv in self.live)
        hidden = self.model.decode(st["canvas"], cache, None if all_fresh else st["soft"])
        logits = self.engine._logits(hidden)
        if self.clamped:
            self._clamp_logits(logits)
        gens = [lv.gen for lv in self.live]
        # the entropy-bound sampler does not read the top probabilities: skip them
        top = None if params.sampler == "entropy_bound" else torch.empty(b, c, device=self.device)
        cand, argmax, entropy, st["soft"] = sample_pass(logits, self.temps[st["steps"]], gens,
                                                        self.model.soft_embeddings, self.chunk, top)
        del logits
        # garbage activations: one [B] flag per pass on device, read with the pass's other figures (no extra
        # host sync). 1: NaN/Inf hidden states; 2: NaN/Inf logits (their NaN reaches the entropy); 4: all-zero
        # hidden states (an overflow inside a norm, x*x = Inf, zeroes the row instead of NaN)
        flat = hidden.flatten(1)
        st["nonfinite"] |= (~torch.isfinite(flat).all(1)).long() | 4 * (flat == 0).all(1).long()
        st["nonfinite"] |= 2 * (~torch.isfinite(entropy).all(1)).long()
        del hidden
        noise = torch.stack([torch.randint(0, self.v, (c,), generator=g, device=self.device) for g in gens])
        accepted = accept_mask(entropy, top, params)
        st["canvas"] = torch.where(accepted, cand, noise)
        st["corr"] += (st["prev_acc"] & ~accepted).sum(-1)
        st["prev_acc"] = accepted
        st["steps"] -= 1
        for lv in self.live:
            self.out[lv.row].num_passes += 1
            lv.steps_left -= 1
        if self.on_pass is not None:
            self.on_pass([lv.row for lv in self.live], argmax)
        if params.fixed_steps:
            return argmax, None
        # (a canvas clamped everywhere has zero entropy: it stops once stable)
        return argmax, self.tracker.update(torch.arange(b, device=self.device), argmax, entropy, st["free"])

    def _read(self, argmax: torch.Tensor, stop: torch.Tensor | None) -> list[bool] | None:
        """The pass's one host read (with fixed steps only on passes where a canvas ends): flags, corrections,
        stop flags and each row's first EOS. Returns which canvases are done, or None when none is."""
        st, c = self.state, self.c
        if stop is None and not any(lv.steps_left == 0 for lv in self.live):
            return None
        cols = [st["nonfinite"], st["corr"], st["nonfinite"] if stop is None else stop.long(), st["nonfinite"]]
        if self.take_eos:
            is_eos = torch.isin(argmax, self.eos)
            cols[3] = torch.where(is_eos.any(-1), is_eos.int().argmax(-1), c)
        packed = torch.stack(cols, 1)
        values = (torch.cat([packed, argmax], 1) if self.on_commit is not None else packed).tolist()
        st["corr"].zero_()
        done = []
        self.flags, self.first_eos = [v[0] for v in values], [v[3] if self.take_eos else c for v in values]
        self.pass_tokens = [v[4:] for v in values]  # empty without on_commit
        for lv, v in zip(self.live, values):
            self.out[lv.row].num_corrections += v[1]
            done.append(lv.steps_left == 0 or (stop is not None and bool(v[2])))
        return done if any(done) else None

    def _finish_canvases(self, argmax: torch.Tensor, done: list[bool], now: float) -> tuple[set[int], list[int]]:
        """Record every finished canvas (its tokens are read at the end of the call); returns (batch indices of
        rows that are done, batch indices of rows whose canvas is committed and who go on). A canvas that saw
        NaN/Inf ends its row with ``RowOutcome.error``."""
        params, c = self.params, self.c
        idx = [i for i, d in enumerate(done) if d]
        block = len(self.blocks)
        if self.on_commit is None:
            self.blocks.append(argmax[torch.tensor(idx, device=self.device)])
        finished, commit = set(), []
        for j, i in enumerate(idx):
            lv = self.live[i]
            plan, out = self.plans[lv.row], self.out[lv.row]
            out.num_canvases += 1
            flags = self.flags[i]
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
                take, over = c, out.num_canvases >= plan.max_canvases
            else:
                take = min(self.first_eos[i], params.max_new_tokens - self.kept[lv.row])
                over = self.first_eos[i] < c or self.kept[lv.row] + take >= params.max_new_tokens \
                    or out.num_canvases >= plan.max_canvases
                if self.first_eos[i] < c:
                    out.finish_reason = "eos"
            self.kept[lv.row] += take
            if self.on_commit is None:
                self.segments.append((block, j, lv.row, take))
            else:
                out.tokens.extend(self.pass_tokens[i][:take])
                if plan.known is None and self.on_commit(lv.row, out.tokens, over) and not over:
                    out.finish_reason, over = "stop", True
            if over:
                out.seconds = now
                finished.add(i)
            else:
                commit.append(i)
        return finished, commit

    def _advance(self, argmax: torch.Tensor, cache: KVCache, finished: set[int], commit: list[int]) -> KVCache | None:
        """Commit the canvases of rows that go on (the encoder appends them to the cache, a fresh canvas starts
        on the next pass) and drop the rows that are done."""
        if commit:
            idx = torch.tensor(commit, device=self.device)
            self.model.encode(argmax[idx], cache, rows=commit)
            lives = [self.live[i] for i in commit]
            for lv in lives:
                lv.canvas_index += 1
            for k, t in self._fresh_rows(lives).items():
                self.state[k][idx] = t
            self.tracker.reset(idx)
        if finished:
            keep = [i for i in range(len(self.live)) if i not in finished]
            self.live = [self.live[i] for i in keep]
            if not keep:
                self.state = {}
                self.tracker.keep(torch.zeros(0, dtype=torch.long, device=self.device))
                return None
            kt = torch.tensor(keep, device=self.device)
            cache = cache.select(keep)
            self.state = {k: t[kt] for k, t in self.state.items()}
            self.tracker.keep(kt)
        return cache

    def _read_tokens(self) -> None:
        """The finished canvases' tokens, read in one transfer at the end of the call."""
        if not self.blocks:
            return
        values = torch.cat(self.blocks).tolist()
        offsets = [0]
        for b in self.blocks:
            offsets.append(offsets[-1] + b.shape[0])
        for block, j, row, take in self.segments:
            self.out[row].tokens.extend(values[offsets[block] + j][:take])


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
