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
from .fuse import FusedLinear
from .invariant import Linear, tiled_attention
from .norms import RMSNorm, rms_norm
from .rope import apply_rope


class Attention(nn.Module):
    invariant = False  # batch-invariant tiles (``invariant.py``), set by the model; then a mask is always given

    def __init__(self, spec: LayerSpec, hidden: int, num_heads: int, eps: float):
        super().__init__()
        self.spec, self.num_heads, self.eps = spec, num_heads, eps
        d, g = spec.head_dim, spec.num_kv_heads
        parts = {"q_proj": num_heads * d, "k_proj": g * d} | ({"v_proj": g * d} if spec.has_v_proj else {})
        self.qkv_proj = FusedLinear(hidden, parts)  # loaded from q_proj, k_proj (and v_proj) by engine/weights.py
        self.o_proj = Linear(num_heads * d, hidden, bias=False)
        self.q_norm = RMSNorm(d, eps)
        self.k_norm = RMSNorm(d, eps)

    def _project(self, x_BTC: torch.Tensor):
        out = self.qkv_proj(x_BTC)
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
        if self.invariant:
            out = tiled_attention(q_BHTD, k_BGSD, v_BGSD, mask)
        else:
            out = F.scaled_dot_product_attention(q_BHTD, k_BGSD, v_BGSD, attn_mask=mask, scale=1.0,
                                                 is_causal=is_causal, enable_gqa=k_BGSD.shape[1] != q_BHTD.shape[1])
        b, _, t, _ = out.shape
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))
