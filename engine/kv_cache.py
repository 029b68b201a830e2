"""The encoder's KV cache, read by the decoder.

Layout: one ``k`` and one ``v`` tensor per layer, ``[B, H_kv, capacity, D]``, allocated once. Every row starts at
slot 0 and a token's slot is its RoPE position, so rows never need shifting. Rows may hold different numbers of
tokens (``lengths``): prompts of different lengths, or rows that have committed different numbers of canvases
(continuous batching admits new rows while others are mid-generation). Slots past a row's length are scratch:
the decoder writes its canvas K/V there and the next commit overwrites them.

Continuous batching (``engine/scheduler.py``) allocates one cache of ``max_inflight`` rows (slots) per call: a row
takes a free slot when admitted (its prompt is encoded into it) and frees it when done; nothing is concatenated
or re-indexed, and a pass reads a view of the slots up to the last one in use.

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

    def view(self, n: int) -> "KVCache":
        """The first ``n`` rows (slots) as views of this cache's tensors: writes through it land here. Its
        ``lengths`` are a copy of the first ``n`` (readers only: encode through the whole cache)."""
        if n == self.batch:
            return self
        new = KVCache.__new__(KVCache)
        new.capacity, new.device, new.lengths = self.capacity, self.device, self.lengths[:n]
        new.k, new.v = [t[:n] for t in self.k], [t[:n] for t in self.v]
        return new

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)
