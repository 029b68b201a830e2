"""The encoder's KV cache, read by the decoder.

Layout: one ``k`` and one ``v`` tensor per layer, ``[B, H_kv, capacity, D]``, allocated once. Rows are
left-padded so that every row commits its canvases at the same slots: row ``b``'s own tokens start at slot
``pad[b]`` and slots ``[0, length)`` are filled. A token's RoPE position is ``slot - pad[b]``, so padding never
shifts positions. Writes and reads use explicit integer ranges (no boolean masks, no ``nonzero`` syncs).
"""

from __future__ import annotations

import torch

from .config import DiffusionGemmaConfig


class KVCache:
    def __init__(self, cfg: DiffusionGemmaConfig, batch: int, capacity: int, pad: torch.Tensor,
                 dtype: torch.dtype, device: torch.device | str):
        self.capacity = capacity
        self.length = 0
        self.pad = pad.to(device=device, dtype=torch.long)  # [B]
        self.has_padding = bool(pad.max() > 0) if pad.numel() else False  # host-side: no device sync later
        self.k = [torch.zeros(batch, l.num_kv_heads, capacity, l.head_dim, dtype=dtype, device=device)
                  for l in cfg.layers]
        self.v = [torch.zeros_like(t) for t in self.k]

    @property
    def batch(self) -> int:
        return self.pad.shape[0]

    def write(self, layer: int, k_BHTD: torch.Tensor, v_BHTD: torch.Tensor, start: int) -> None:
        end = start + k_BHTD.shape[2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache overflow: writing up to slot {end} of {self.capacity}")
        self.k[layer][:, :, start:end] = k_BHTD
        self.v[layer][:, :, start:end] = v_BHTD

    def read(self, layer: int, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k[layer][:, :, start:end], self.v[layer][:, :, start:end]

    def select(self, rows: torch.Tensor) -> "KVCache":
        """A cache holding only ``rows`` (a copy of the filled slots), e.g. when finished rows leave the batch."""
        new = KVCache.__new__(KVCache)
        new.capacity, new.length, new.pad = self.capacity, self.length, self.pad[rows]
        new.has_padding = self.has_padding  # conservative: a subset of padded rows may still need the mask
        new.k = [t.index_select(0, rows) for t in self.k]
        new.v = [t.index_select(0, rows) for t in self.v]
        return new

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)
