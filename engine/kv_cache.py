"""The encoder's KV cache, read by the decoder.

Layout: one ``k`` and one ``v`` tensor per layer, ``[B, H_kv, capacity, D]``, allocated once. Every row starts at
slot 0 and a token's slot is its RoPE position, so rows never need shifting. Rows may hold different numbers of
tokens (``lengths``): prompts of different lengths, or rows that have committed different numbers of canvases
(continuous batching admits new rows while others are mid-generation). Slots past a row's length are scratch:
the decoder writes its canvas K/V there and the next commit overwrites them.

Lengths are kept on the host (a Python list) so that building ranges and masks never waits on the device.
Writes and reads use explicit integer ranges or index tensors (no boolean masks, no ``nonzero`` syncs).
"""

from __future__ import annotations

import torch

from .config import DiffusionGemmaConfig


class KVCache:
    def __init__(self, cfg: DiffusionGemmaConfig, batch: int, capacity: int, dtype: torch.dtype,
                 device: torch.device | str):
        self.capacity = capacity
        self.lengths: list[int] = [0] * batch
        self.device = torch.device(device)
        self.k = [torch.zeros(batch, l.num_kv_heads, capacity, l.head_dim, dtype=dtype, device=device)
                  for l in cfg.layers]
        self.v = [torch.zeros_like(t) for t in self.k]

    @property
    def batch(self) -> int:
        return len(self.lengths)

    @property
    def uniform(self) -> bool:
        """Every row holds the same number of tokens (then ranges are plain slices and no mask is needed)."""
        return min(self.lengths) == max(self.lengths)

    def lengths_tensor(self) -> torch.Tensor:
        return torch.tensor(self.lengths, dtype=torch.long, device=self.device)

    def check_room(self, rows: list[int] | None, n: int) -> None:
        need = max(self.lengths if rows is None else [self.lengths[r] for r in rows]) + n
        if need > self.capacity:
            raise RuntimeError(f"KV cache overflow: writing up to slot {need} of {self.capacity}")

    def write(self, layer: int, k_BHTD: torch.Tensor, v_BHTD: torch.Tensor, slots: slice | torch.Tensor,
              rows: torch.Tensor | None = None) -> None:
        """Store new K/V. ``slots`` is one slice shared by all rows, or a ``[B, T]`` tensor of per-row slots
        (then ``rows``, a ``[B]`` tensor of cache rows, may pick a subset of the cache's rows)."""
        if isinstance(slots, slice):
            if rows is None:
                self.k[layer][:, :, slots] = k_BHTD
                self.v[layer][:, :, slots] = v_BHTD
                return
            slots = torch.arange(slots.start, slots.stop, device=self.device).expand(rows.shape[0], -1)
        index_rows = (rows if rows is not None else torch.arange(self.batch, device=self.device))[:, None]
        # advanced indices around a slice put the indexed dims first: [B, T, H, D]
        self.k[layer][index_rows, :, slots] = k_BHTD.transpose(1, 2)
        self.v[layer][index_rows, :, slots] = v_BHTD.transpose(1, 2)

    def read(self, layer: int, start: int, end: int, rows: torch.Tensor | None = None):
        k, v = self.k[layer][:, :, start:end], self.v[layer][:, :, start:end]
        if rows is not None:
            k, v = k.index_select(0, rows), v.index_select(0, rows)
        return k, v

    def select(self, rows: list[int]) -> "KVCache":
        """A cache holding only ``rows`` (a copy of their filled slots), e.g. when finished rows leave."""
        new = KVCache.__new__(KVCache)
        new.capacity, new.device = self.capacity, self.device
        new.lengths = [self.lengths[r] for r in rows]
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        new.k = [t.index_select(0, idx) for t in self.k]
        new.v = [t.index_select(0, idx) for t in self.v]
        return new

    def concat(self, other: "KVCache") -> "KVCache":
        """This cache's rows followed by ``other``'s (rows admitted mid-generation). Only filled slots are
        copied; the capacity is the larger of the two."""
        new = KVCache.__new__(KVCache)
        new.capacity, new.device = max(self.capacity, other.capacity), self.device
        new.lengths = self.lengths + other.lengths
        filled_a, filled_b = max(self.lengths), max(other.lengths)
        new.k, new.v = [], []
        for mine, theirs, out in ((self.k, other.k, new.k), (self.v, other.v, new.v)):
            for a, b in zip(mine, theirs):
                t = a.new_zeros(a.shape[0] + b.shape[0], a.shape[1], new.capacity, a.shape[3])
                t[:a.shape[0], :, :filled_a] = a[:, :, :filled_a]
                t[a.shape[0]:, :, :filled_b] = b[:, :, :filled_b]
                out.append(t)
        return new

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)
