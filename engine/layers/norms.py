"""RMSNorm as Gemma 4 computes it: in fp32, ``x * (mean(x^2) + eps) ** -0.5``, optional learned scale."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """Normalise the last dim in fp32 (for bf16 stability), scale in fp32, and return in the input dtype.
    Uses the fused kernel: the same formula as the reference up to the last ulp of the inverse square root."""
    w = None if weight is None else weight.float()
    return F.rms_norm(x.float(), (x.shape[-1],), w, eps).type_as(x)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, with_scale: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim), requires_grad=False) if with_scale else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)
