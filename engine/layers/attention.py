"""Self-attention of one DiffusionGemma layer, used two ways with the same weights:

* ``encode``: causal over the prompt / committed canvas; writes K and V into the cache;
* ``decode``: bidirectional over the canvas, reading (never writing) the cached prefix.

Shapes: B = batch, T = new tokens, S = key slots, H = query heads, G = KV heads, D = head dim.
Query/key RMSNorm with learned scale, scale-free value norm, attention scaling 1.0. Full-attention layers have
no ``v_proj``: the key projection is also the value (before the norms).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import LayerSpec
from .fuse import fused_linear
from .norms import RMSNorm, rms_norm
from .rope import apply_rope


class Attention(nn.Module):
    def __init__(self, spec: LayerSpec, hidden: int, num_heads: int, eps: float):
        super().__init__()
        self.spec, self.num_heads, self.eps = spec, num_heads, eps
        d, g = spec.head_dim, spec.num_kv_heads
        self.q_proj = nn.Linear(hidden, num_heads * d, bias=False)
        self.k_proj = nn.Linear(hidden, g * d, bias=False)
        self.v_proj = nn.Linear(hidden, g * d, bias=False) if spec.has_v_proj else None
        self.o_proj = nn.Linear(num_heads * d, hidden, bias=False)
        self.q_norm = RMSNorm(d, eps)
        self.k_norm = RMSNorm(d, eps)

        self.qkv_proj: nn.Linear | None = None

    def fuse(self) -> None:
        """Replace q/k(/v) projections by one matmul over their concatenated weights (same results, fewer
        kernel launches); the separate modules are dropped so no weight is held twice."""
        parts = [self.q_proj, self.k_proj] + ([self.v_proj] if self.v_proj is not None else [])
        self.qkv_proj = fused_linear(*parts)
        self._split = [p.weight.shape[0] for p in parts]
        del self.q_proj, self.k_proj
        if self.v_proj is not None:
            del self.v_proj
        self.v_proj = None

    def _project(self, x_BTC: torch.Tensor):
        if self.qkv_proj is None:
            v = self.v_proj(x_BTC) if self.v_proj is not None else None
            return self.q_proj(x_BTC), self.k_proj(x_BTC), v
        out = self.qkv_proj(x_BTC).split(self._split, dim=-1)
        return out[0], out[1], out[2] if len(out) == 3 else None

    def qkv(self, x_BTC: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Projected, normalised and rotated q ``[B,H,T,D]``, k and v ``[B,G,T,D]``."""
        b, t, _ = x_BTC.shape
        d = self.spec.head_dim
        q_lin, k_lin, v_lin = self._project(x_BTC)
        q = apply_rope(self.q_norm(q_lin.view(b, t, -1, d)), cos, sin)
        k_raw = k_lin.view(b, t, -1, d)
        v_raw = v_lin.view(b, t, -1, d) if v_lin is not None else k_raw
        k = apply_rope(self.k_norm(k_raw), cos, sin)
        v = rms_norm(v_raw, None, self.eps)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def attend(self, q_BHTD, k_BGSD, v_BGSD, mask, is_causal: bool = False) -> torch.Tensor:
        """Scaled-dot-product attention (scale 1.0, grouped KV heads); returns ``[B, T, hidden]``.
        ``mask`` None with ``is_causal`` False attends everywhere; both let SDPA pick its fused kernels."""
        out = F.scaled_dot_product_attention(q_BHTD, k_BGSD, v_BGSD, attn_mask=mask, scale=1.0, is_causal=is_causal,
                                             enable_gqa=k_BGSD.shape[1] != q_BHTD.shape[1])
        b, _, t, _ = out.shape
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))
