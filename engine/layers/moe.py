"""Gemma 4's routed mixture of experts: a router (scores and ids) and stacked experts.

Shapes: N = tokens (flattened), D = model dim, E = experts, K = experts per token, I = expert width.
Experts are stored as the checkpoint packs them: ``gate_up_proj [E, 2I, D]`` and ``down_proj [E, D, I]``.

Two expert paths compute the same function: ``experts_reference`` (a readable loop over experts, kept to test
against) and ``experts_grouped`` (tokens sorted by expert, one grouped GEMM per projection, no Python loop
over experts) used on the hot path when ``torch._grouped_mm`` exists.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .invariant import EXPERT_TILE_ROWS, Linear
from .norms import rms_norm


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


class Router(nn.Module):
    """Scores experts from the un-normalised residual: scale-free RMSNorm, learned ``scale`` and ``D**-0.5``,
    a linear ``proj``, softmax in fp32, top-K renormalised to sum to 1, then multiplied by ``per_expert_scale``."""

    def __init__(self, hidden: int, num_experts: int, top_k: int, eps: float):
        super().__init__()
        self.top_k, self.eps, self.root = top_k, eps, hidden**-0.5
        self.proj = Linear(hidden, num_experts, bias=False)
        self.scale = nn.Parameter(torch.ones(hidden), requires_grad=False)
        self.per_expert_scale = nn.Parameter(torch.ones(num_experts), requires_grad=False)

    def forward(self, x_ND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = rms_norm(x_ND, None, self.eps) * self.scale * self.root
        probs_NE = torch.softmax(self.proj(h), dim=-1, dtype=torch.float32)
        weights_NK, ids_NK = torch.topk(probs_NE, self.top_k, dim=-1)
        weights_NK = weights_NK / weights_NK.sum(-1, keepdim=True)
        return weights_NK * self.per_expert_scale[ids_NK], ids_NK


class Experts(nn.Module):
    def __init__(self, num_experts: int, hidden: int, width: int):
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * width, hidden), requires_grad=False)
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden, width), requires_grad=False)
        self.use_grouped = hasattr(torch, "_grouped_mm")
        self.invariant = False  # batch-invariant tiles (``experts_tiled``), set by the model

    def forward(self, x_ND: torch.Tensor, weights_NK: torch.Tensor, ids_NK: torch.Tensor) -> torch.Tensor:
        if self.invariant:
            return experts_tiled(x_ND, weights_NK, ids_NK, self.gate_up_proj, self.down_proj)
        if self.use_grouped and grouped_supported(x_ND):
            return experts_grouped(x_ND, weights_NK, ids_NK, self.gate_up_proj, self.down_proj)
        return experts_reference(x_ND, weights_NK, ids_NK, self.gate_up_proj, self.down_proj)


def grouped_supported(x: torch.Tensor) -> bool:
    # CPU kernels take fp32/bf16/fp16; CUDA kernels take bf16 (Hopper and newer).
    if x.device.type == "cuda":
        return x.dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device)[0] >= 9
    return x.dtype in (torch.float32, torch.bfloat16, torch.float16)


def experts_reference(x_ND, weights_NK, ids_NK, w13_EFD, w2_EDI) -> torch.Tensor:
    """Readable path: for every expert, gather its tokens, run the gated MLP, scatter-add weighted outputs."""
    out_ND = torch.zeros_like(x_ND)
    for e in range(w13_EFD.shape[0]):
        token_idx, slot = torch.where(ids_NK == e)
        if token_idx.numel() == 0:
            continue
        gate, up = F.linear(x_ND[token_idx], w13_EFD[e]).chunk(2, dim=-1)
        y = F.linear(gelu_tanh(gate) * up, w2_EDI[e]) * weights_NK[token_idx, slot, None]
        out_ND.index_add_(0, token_idx, y.to(out_ND.dtype))
    return out_ND


def sort_pairs(ids_NK: torch.Tensor, num_experts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Order the N*K (token, expert) pairs by expert for a grouped GEMM.

    Returns ``order`` (pair index of each sorted row, M = N*K), ``token_of_pair_M`` (the token each sorted row
    reads) and ``offsets_E`` (int32 end of each expert's rows, the ``offs`` argument of the grouped GEMMs)."""
    k = ids_NK.shape[1]
    flat_ids = ids_NK.reshape(-1)
    order = torch.argsort(flat_ids, stable=True)
    counts_E = torch.bincount(flat_ids, minlength=num_experts)
    return order, order // k, torch.cumsum(counts_E, 0).to(torch.int32)


def combine_pairs(y_MD: torch.Tensor, order: torch.Tensor, weights_NK: torch.Tensor,
                  dtype: torch.dtype) -> torch.Tensor:
    """Weight each sorted expert output by its routing weight, put it back in (token, slot) order and sum each
    token's K outputs (a reshape and a sum: no scatter-add)."""
    n_tokens, k = weights_NK.shape
    y_MD = y_MD * weights_NK.reshape(-1)[order, None]
    unsorted = torch.empty_like(y_MD)
    unsorted[order] = y_MD
    return unsorted.view(n_tokens, k, -1).sum(1).to(dtype)


def experts_grouped(x_ND, weights_NK, ids_NK, w13_EFD, w2_EDI) -> torch.Tensor:
    """Fast path: sort the N*K (token, expert) pairs by expert and run each projection as one grouped GEMM."""
    order, token_of_pair, offsets_E = sort_pairs(ids_NK, w13_EFD.shape[0])
    x_sorted = x_ND[token_of_pair]
    gate_up = torch._grouped_mm(x_sorted, w13_EFD.transpose(1, 2), offs=offsets_E)
    gate, up = gate_up.chunk(2, dim=-1)
    y = torch._grouped_mm((gelu_tanh(gate) * up).contiguous(), w2_EDI.transpose(1, 2), offs=offsets_E)
    return combine_pairs(y, order, weights_NK, x_ND.dtype)


def experts_tiled(x_ND, weights_NK, ids_NK, w13_EFD, w2_EDI) -> torch.Tensor:
    """Batch-invariant path (``invariant.py``): the sorted (token, expert) pairs of each expert are padded to
    whole tiles of ``EXPERT_TILE_ROWS`` rows and every tile is one matrix of a batched GEMM with its expert's
    weights, so a pair's product never depends on how many pairs its expert got. The buffer holds a fixed bound
    of tiles (pairs / tile + experts): nothing waits on the routing counts."""
    e, t = w13_EFD.shape[0], EXPERT_TILE_ROWS
    order, token_of_pair, offsets_E = sort_pairs(ids_NK, e)
    counts = torch.diff(offsets_E.long(), prepend=offsets_E.new_zeros(1).long())
    padded = (counts + t - 1) // t * t
    padded_end = torch.cumsum(padded, 0)
    expert_of_row = ids_NK.reshape(-1)[order]
    rank = torch.arange(order.numel(), device=x_ND.device) - (offsets_E.long() - counts)[expert_of_row]
    dest = (padded_end - padded)[expert_of_row] + rank  # each sorted pair's row in the padded buffer
    n_tiles = -(-order.numel() // t) + e
    rows = x_ND.new_zeros(n_tiles * t, x_ND.shape[1])
    rows[dest] = x_ND[token_of_pair]
    tile_expert = torch.searchsorted(padded_end, torch.arange(n_tiles, device=x_ND.device) * t, right=True)
    tile_expert.clamp_(max=e - 1)  # tiles past the last expert's are zeros: any expert's weights do
    gate, up = torch.bmm(rows.view(n_tiles, t, -1), w13_EFD[tile_expert].transpose(1, 2)).chunk(2, dim=-1)
    y = torch.bmm(gelu_tanh(gate) * up, w2_EDI[tile_expert].transpose(1, 2)).view(n_tiles * t, -1)
    return combine_pairs(y[dest], order, weights_NK, x_ND.dtype)
