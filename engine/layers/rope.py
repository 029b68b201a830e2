"""Rotary position embeddings: Gemma's ``default`` kind and the ``proportional`` partial kind.

Shapes: B = batch, T = tokens, H = heads, D = head dim.
"""

from __future__ import annotations

import torch

from ..config import RopeSpec


def inverse_frequencies(spec: RopeSpec, head_dim: int) -> torch.Tensor:
    """Inverse frequencies (fp32) whose duplicated length equals the rotated width.

    ``default`` rotates the first ``partial * head_dim`` dims; ``proportional`` keeps frequencies for the whole
    head dim but zeroes all past the first ``partial`` fraction (those dims pass through unrotated).
    """
    if spec.kind == "default":
        dim = int(head_dim * spec.partial)
        return 1.0 / (spec.theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    if spec.kind == "proportional":
        angles = int(spec.partial * head_dim // 2)
        rotated = 1.0 / (spec.theta ** (torch.arange(0, 2 * angles, 2, dtype=torch.float) / head_dim))
        return torch.cat([rotated, torch.zeros(head_dim // 2 - angles)])
    raise ValueError(f"unsupported rope kind {spec.kind!r}")


def rope_cos_sin(inv_freq: torch.Tensor, positions_BT: torch.Tensor, dtype: torch.dtype):
    """cos and sin, each ``[B, T, D]`` in ``dtype``, for integer positions ``[B, T]``."""
    freqs = positions_BT[..., None].float() * inv_freq.to(positions_BT.device)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x_BTHD: torch.Tensor, cos_BTD: torch.Tensor, sin_BTD: torch.Tensor) -> torch.Tensor:
    cos, sin = cos_BTD.unsqueeze(2), sin_BTD.unsqueeze(2)
    half = x_BTHD.shape[-1] // 2
    rotated = torch.cat([-x_BTHD[..., half:], x_BTHD[..., :half]], dim=-1)
    return x_BTHD * cos + rotated * sin
