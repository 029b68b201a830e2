"""Batch-invariant matrix products: a row's result does not depend on how many rows are multiplied with it.

A CPU GEMM picks its kernel and its blocking of the reduction from the matrix shape, so the same input row
multiplied by the same weight gives results that differ in the last bits with the number of rows (measured on
this project's machine: ``F.linear`` of one row alone differs from the same row among 8 or more, and for
reductions of 704 or more columns a row among 8-17 rows differs from one among 18 or more; a grouped GEMM's row
changes with its expert's group size). In a batch those last bits move logits by about 1e-5, and a draw near a
boundary then picks another token: a row's text would depend on its batch mates.

``tiled_linear`` removes the dependence: the rows are cut into tiles of ``TILE_ROWS`` (zero-padded, at least two
tiles) and multiplied by one batched GEMM whose every matrix has the same shape, so every row goes through the
same kernel with the same blocking whatever the batch. ``moe.experts_tiled`` does the same for the routed
experts. Both use only batched tensor ops (no host syncs) and fixed-size buffers.

The modules below carry an ``invariant`` flag (``DiffusionGemmaModel.set_batch_invariant``); with it off they
run the plain ``F.linear`` / grouped-GEMM paths.
"""

from __future__ import annotations

import torch
from torch import nn

TILE_ROWS = 16  # rows per GEMM tile: the decoder's row counts (batch x canvas) are multiples of it
EXPERT_TILE_ROWS = 8  # smaller for experts: each expert's last tile is padded (up to E partly empty tiles)


def tiled_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` (``F.linear`` without bias) for any leading shape of ``x``, batch-invariant."""
    lead, k = x.shape[:-1], x.shape[-1]
    flat = x.reshape(-1, k)
    m = flat.shape[0]
    n = max(-(-m // TILE_ROWS), 2)  # a single matrix would go to the plain GEMM, which blocks by shape
    padded = flat.new_zeros(n * TILE_ROWS, k)
    padded[:m] = flat
    w_t = weight.t()
    out = torch.bmm(padded.view(n, TILE_ROWS, k), w_t.expand(n, *w_t.shape))
    return out.view(n * TILE_ROWS, -1)[:m].reshape(*lead, -1)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and names) whose product is batch-invariant when ``invariant`` is set."""

    invariant = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.invariant:
            return super().forward(x)
        out = tiled_linear(x, self.weight)
        return out if self.bias is None else out + self.bias


def set_invariant(module: nn.Module, enabled: bool) -> None:
    """Set the ``invariant`` flag of every submodule that has one."""
    for m in module.modules():
        if hasattr(m, "invariant"):
            m.invariant = bool(enabled)


Q_TILE = 16  # queries per attention tile
K_TILE = 128  # keys per attention tile (the key range always starts at slot 0, so tile edges are fixed slots)
_NEG = -1e30  # finite: a tile with no visible key gives weights that the next visible tile's rescale zeroes


def tiled_attention(q_BHTD: torch.Tensor, k_BGSD: torch.Tensor, v_BGSD: torch.Tensor,
                    mask: torch.Tensor) -> torch.Tensor:
    """Scaled-dot-product attention (scale 1.0, grouped KV heads, boolean ``mask`` broadcastable to
    ``[B, 1, T, S]``), batch-invariant. SDPA's CPU kernel sizes its query and key blocks from the sequence
    lengths, so a row's result moved with the batch's longest prompt. Here queries are padded to tiles of
    ``Q_TILE`` and keys to tiles of ``K_TILE`` (fixed slots), and the keys are walked tile by tile with an
    online softmax, every product one fixed-shape batched GEMM: a row sees the same operations whatever the
    batch, its length or its batch mates'. Returns ``[B, H, T, D]``."""
    b, h, t, d = q_BHTD.shape
    g, s = k_BGSD.shape[1], k_BGSD.shape[2]
    nq, nk = -(-t // Q_TILE), -(-s // K_TILE)
    q = q_BHTD.new_zeros(b, h, nq * Q_TILE, d)
    q[:, :, :t] = q_BHTD
    q = q.view(b, h, nq, Q_TILE, d).float()
    keys, values = (x.new_zeros(b, g, nk * K_TILE, d) for x in (k_BGSD, v_BGSD))
    keys[:, :, :s], values[:, :, :s] = k_BGSD, v_BGSD
    keys, values = (x.float().repeat_interleave(h // g, dim=1) for x in (keys, values))
    visible = torch.zeros(b, 1, nq * Q_TILE, nk * K_TILE, dtype=torch.bool, device=q.device)
    visible[:, :, :t, :s] = mask
    visible = visible.view(b, 1, nq, Q_TILE, nk * K_TILE)
    best = torch.full((b, h, nq, Q_TILE), _NEG, device=q.device)
    total = torch.zeros(b, h, nq, Q_TILE, device=q.device)
    acc = torch.zeros(b, h, nq, Q_TILE, d, device=q.device)
    for j in range(nk):
        cols = slice(j * K_TILE, (j + 1) * K_TILE)
        scores = torch.matmul(q, keys[:, :, None, cols].transpose(-1, -2))  # [B, H, nq, Q, K]
        scores.masked_fill_(~visible[..., cols], _NEG)
        new_best = torch.maximum(best, scores.amax(-1))
        weights = torch.exp(scores - new_best[..., None])
        rescale = torch.exp(best - new_best)
        total = total * rescale + weights.sum(-1)
        acc = acc * rescale[..., None] + torch.matmul(weights, values[:, :, None, cols])
        best = new_best
    out = (acc / total[..., None]).view(b, h, nq * Q_TILE, d)[:, :, :t]
    return out.to(q_BHTD.dtype)
