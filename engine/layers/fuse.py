"""Fusing bias-free projections that read the same input into one matmul (inference only)."""

from __future__ import annotations

import torch
from torch import nn


def fused_linear(*parts: nn.Linear) -> nn.Linear:
    """One ``nn.Linear`` whose output is the concatenation of ``parts``' outputs (weights concatenated on the
    output dim; no bias). The new weight is the only copy: the caller drops the parts."""
    w = torch.cat([p.weight for p in parts], 0)
    fused = nn.Linear(w.shape[1], w.shape[0], bias=False, device="meta")
    fused.weight = nn.Parameter(w, requires_grad=False)
    return fused
