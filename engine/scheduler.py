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

import time
from collections import deque
from dataclasses import dataclass

import torch

from .kv_cache import KVCache
from .plans import FREE, RowOutcome, RowPlan
from .sampling.accept import accept_mask
from .sampling.entropy_bound import StopTracker, position_chunk, sample_pass
from .sampling.params import SamplingParams

_NEG = -1e30  # finite: softmax gives exactly 0 and p * log p stays 0 (an -inf would make it NaN)


@dataclass
class _Live:
    """A row in the batch: which row, its generator, which canvas, passes left on it (the host's copy)."""

    row: int
    gen: torch.Generator
    canvas_index: int = 0
    steps_left: int = 0


class Scheduler:
    """The loop's batch state is one tensor per field with one row per slot (``max_inflight`` of them, allocated
    once, like the KV cache; ``self.live[slot]`` is the row in it or None), so a pass runs the same ops whatever
    the batch: ``canvas`` [B, C] tokens, ``soft`` [B, C, D] self-conditioning,
    ``prev_acc`` [B, C] the last pass's accepted positions, ``nonfinite`` [B] flags, ``corr`` [B]
    self-corrections not yet read, ``steps`` [B] passes left, ``free`` [B] denoised positions (at least 1), and
    in clamped calls ``known`` [B, C] (``FREE`` where denoised) and ``allowed`` [B, C] (a mask-table row, -1 = any).
    The host reads the device at most once per pass (flags, corrections, stop decisions, first EOS); the tokens of
    finished canvases stay on the device until the end of the call."""

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
        self.clamped = any(p.known is not None for p in plans)
        self.restricting = self.masks is not None and any(p.allowed is not None for p in plans)
        self.take_eos = not params.ignore_eos and any(p.known is None for p in plans)
        # the pass temperature by passes left, as the host computes it (one lookup per pass, no transfer)
        self.temps = torch.tensor([params.temperature(s) for s in range(params.max_denoising_steps + 1)],
                                  device=self.device)
        self.blocks: list[torch.Tensor] = []  # argmax of finished canvases, on device until the end
        self.segments: list[tuple[int, int, int, int]] = []  # (block, index in it, row, tokens kept)
        self.kept = [0] * len(plans)  # tokens kept so far per row
        self.host_tokens: list[list[int]] = [[] for _ in plans]  # read at each commit, only for on_commit
        self.idle_gen = torch.Generator(device=self.device).manual_seed(0)  # the draws of free slots in a pass

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

    def _new_state(self) -> dict[str, torch.Tensor]:
        """Batch state for every slot, allocated once; a slot's rows are overwritten when a row takes it."""
        n, c, d, dev = self.max_inflight, self.c, self.engine.config.hidden_size, self.device
        state = {"canvas": torch.zeros(n, c, dtype=torch.long, device=dev),
                 "steps": torch.full((n,), self.params.max_denoising_steps, dtype=torch.long, device=dev),
                 "free": torch.ones(n, dtype=torch.float32, device=dev),
                 "soft": torch.zeros(n, c, d, dtype=self.model.dtype, device=dev),
                 "prev_acc": torch.zeros(n, c, dtype=torch.bool, device=dev),
                 "nonfinite": torch.zeros(n, dtype=torch.long, device=dev),
                 "corr": torch.zeros(n, dtype=torch.long, device=dev)}
        if self.clamped:
            state["known"] = torch.full((n, c), FREE, dtype=torch.long, device=dev)
        if self.restricting:
            state["allowed"] = torch.full((n, c), -1, dtype=torch.long, device=dev)
        return state

    def _admit(self, queue: deque, cache: KVCache) -> None:
        """Waiting rows take free slots, lowest first (a canvas boundary for the rows that just left): their
        prompts are encoded into those slots of the cache; no other row's K/V moves."""
        free = [i for i in range(self.max_inflight) if i >= len(self.live) or self.live[i] is None]
        if not free or not queue:
            return
        slots = free[:len(queue)]
        new = [queue.popleft() for _ in slots]
        self.live += [None] * (max(slots) + 1 - len(self.live))
        for i in slots:
            cache.lengths[i] = 0
        for group in _length_groups([(slot, self.plans[r].prompt) for slot, r in zip(slots, new)]):
            prompts = [p for _, p in group]
            longest, pad = max(len(p) for p in prompts), self.engine.config.pad_token_id
            ids = torch.tensor([p + [pad] * (longest - len(p)) for p in prompts], dtype=torch.long,
                               device=self.device)
            self.model.encode(ids, cache, rows=[slot for slot, _ in group], valid=[len(p) for p in prompts])
        lives = [_Live(r, torch.Generator(device=self.device).manual_seed(int(self.plans[r].seed))) for r in new]
        idx = torch.tensor(slots, device=self.device)
        for k, t in self._fresh_rows(lives).items():
            self.state[k][idx] = t
        self.state["nonfinite"][idx] = 0
        self.state["corr"][idx] = 0
        for i, lv in zip(slots, lives):
            self.live[i] = lv
        self.tracker.reset(idx)

    def _view(self, cache: KVCache) -> KVCache:
        """The cache's slots up to the last live one, as views (no copy). A free slot inside is parked at the
        longest live row's length, so it widens no row's key range; its canvas K/V go to its own scratch."""
        n = len(self.live)
        parked = max(cache.lengths[i] for i, lv in enumerate(self.live) if lv is not None)
        for i, lv in enumerate(self.live):
            if lv is None:
                cache.lengths[i] = parked
        return cache.view(n)

    # ------------------------------------------------------------------------------------------- clamps
    def _clamp_logits(self, logits: torch.Tensor, st: dict[str, torch.Tensor]) -> None:
        """Apply the rows' allowed-token masks and known tokens to this pass's logits, in place, batched (the
        mask lookup in chunks of positions, so its ``[P, V]`` temporary stays within the sampler's budget)."""
        b, c, v = logits.shape
        if self.restricting:
            flat, allowed = logits.view(b * c, v), st["allowed"].reshape(-1)
            for s in range(0, b * c, self.chunk):
                ids = allowed[s:s + self.chunk]
                banned = ~self.masks[ids.clamp(min=0)]
                banned &= (ids >= 0)[:, None]
                flat[s:s + self.chunk].masked_fill_(banned, _NEG)
        known = st["known"]
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
        if not queue:
            return self.out
        # one slot per row in flight, allocated once: rows take a slot when admitted and free it when done
        self.live: list[_Live | None] = []  # by slot, up to the last slot in use
        self.state = self._new_state()
        self.tracker = StopTracker(self.max_inflight, c, params.stability_threshold, params.confidence_threshold,
                                   self.device)
        cache = KVCache(self.engine.config, self.max_inflight, self.capacity, self.model.dtype, self.device)
        while queue or self.live:
            self._admit(queue, cache)
            argmax, stop = self._pass(self._view(cache))
            done = self._read(argmax, stop)
            if done is None:
                continue
            finished, commit = self._finish_canvases(argmax, done, time.perf_counter() - start)
            self._advance(argmax, cache, finished, commit)
        self._read_tokens()
        return self.out

    def _pass(self, cache: KVCache) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One denoising pass over the slots up to the last live one (``cache`` is that view); returns the argmax
        canvases and (adaptive stopping) the slots' stop flags, both on device. A free slot inside the view runs
        too (its results are never read) and draws from a generator of its own, so live rows' draws do not move."""
        params, b, c = self.params, len(self.live), self.c
        st = {k: t[:b] for k, t in self.state.items()}  # views: writes below go to the slots' state
        live = [lv for lv in self.live if lv is not None]
        # every row on the first pass of its canvas: no self-conditioning signal at all (zeros add exactly 0)
        all_fresh = all(lv.steps_left == params.max_denoising_steps for lv in live)
        hidden = self.model.decode(st["canvas"], cache, None if all_fresh else st["soft"])
        logits = self.engine._logits(hidden)
        if self.clamped:
            self._clamp_logits(logits, st)
        gens = [lv.gen if lv is not None else self.idle_gen for lv in self.live]
        # the entropy-bound sampler does not read the top probabilities: skip them
        top = None if params.sampler == "entropy_bound" else torch.empty(b, c, device=self.device)
        cand, argmax, entropy, soft = sample_pass(logits, self.temps[st["steps"].clamp(min=0)], gens,
                                                  self.model.soft_embeddings, self.chunk, top)
        st["soft"].copy_(soft)
        del logits, soft
        # garbage activations: one [B] flag per pass on device, read with the pass's other figures (no extra
        # host sync). 1: NaN/Inf hidden states; 2: NaN/Inf logits (their NaN reaches the entropy); 4: all-zero
        # hidden states (an overflow inside a norm, x*x = Inf, zeroes the row instead of NaN)
        flat = hidden.flatten(1)
        st["nonfinite"] |= (~torch.isfinite(flat).all(1)).long() | 4 * (flat == 0).all(1).long()
        st["nonfinite"] |= 2 * (~torch.isfinite(entropy).all(1)).long()
        del hidden
        noise = torch.stack([torch.randint(0, self.v, (c,), generator=g, device=self.device) for g in gens])
        accepted = accept_mask(entropy, top, params)
        st["canvas"].copy_(torch.where(accepted, cand, noise))
        st["corr"] += (st["prev_acc"] & ~accepted).sum(-1)
        st["prev_acc"].copy_(accepted)
        st["steps"] -= 1
        for lv in live:
            self.out[lv.row].num_passes += 1
            lv.steps_left -= 1
        if self.on_pass is not None:
            slots = [i for i, lv in enumerate(self.live) if lv is not None]
            rows = argmax if len(slots) == b else argmax[torch.tensor(slots, device=self.device)]
            self.on_pass([self.live[i].row for i in slots], rows)
        if params.fixed_steps:
            return argmax, None
        # (a canvas clamped everywhere has zero entropy: it stops once stable)
        return argmax, self.tracker.update(torch.arange(b, device=self.device), argmax, entropy, st["free"])

    def _read(self, argmax: torch.Tensor, stop: torch.Tensor | None) -> list[bool] | None:
        """The pass's one host read (with fixed steps only on passes where a canvas ends): flags, corrections,
        stop flags and each row's first EOS. Returns which slots' canvases are done, or None when none is."""
        b, c = len(self.live), self.c
        st = {k: t[:b] for k, t in self.state.items()}
        if stop is None and not any(lv is not None and lv.steps_left == 0 for lv in self.live):
            return None
        cols = [st["nonfinite"], st["corr"], st["nonfinite"] if stop is None else stop.long()]
        if self.take_eos:
            is_eos = torch.isin(argmax, self.eos)
            cols.append(torch.where(is_eos.any(-1), is_eos.int().argmax(-1), c))
        values = torch.stack(cols, 1).tolist()
        st["corr"].zero_()
        done = []
        self.flags, self.first_eos = [v[0] for v in values], [v[3] if self.take_eos else c for v in values]
        for lv, v in zip(self.live, values):
            if lv is None:
                done.append(False)
                continue
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
            self.segments.append((block, j, lv.row, take))
            self.kept[lv.row] += take
            if self.on_commit is not None:  # a caller that streams: this canvas's tokens now (one read per canvas)
                self.host_tokens[lv.row] += self.blocks[block][j, :take].tolist()
                if self.on_commit(lv.row, self.host_tokens[lv.row], over) and not over:
                    out.finish_reason, over = "stop", True
            if over:
                out.seconds = now
                finished.add(i)
            else:
                commit.append(i)
        return finished, commit

    def _advance(self, argmax: torch.Tensor, cache: KVCache, finished: set[int], commit: list[int]) -> None:
        """Commit the canvases of rows that go on (the encoder appends them to their slots, a fresh canvas starts
        on the next pass) and free the slots of rows that are done (nothing is copied)."""
        if commit:
            idx = torch.tensor(commit, device=self.device)
            self.model.encode(argmax[idx], cache, rows=commit)
            lives = [self.live[i] for i in commit]
            for lv in lives:
                lv.canvas_index += 1
            for k, t in self._fresh_rows(lives).items():
                self.state[k][idx] = t
            self.tracker.reset(idx)
        for i in finished:
            self.live[i] = None
            cache.lengths[i] = 0
        while self.live and self.live[-1] is None:
            self.live.pop()

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


def _length_groups(items: list[tuple[int, list[int]]], slack: float = 1.25) -> list[list[tuple[int, list[int]]]]:
    """Prompts to encode together, by length: a group's longest is at most ``slack`` times its shortest (plus
    one canvas-sized margin), so one long prompt is not padded onto every short one (a 1,200-token prompt among
    8-token ones made the prefill 13x the cache)."""
    groups: list[list[tuple[int, list[int]]]] = []
    for item in sorted(items, key=lambda it: len(it[1])):
        if groups and len(item[1]) <= slack * len(groups[-1][0][1]) + 16:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups
