"""Bias-free projections that read the same input, held as one matrix so they run as one matmul.

The checkpoint stores each projection on its own (``q_proj``, ``k_proj``, ``v_proj``; ``gate_proj``,
``up_proj``); ``FusedLinear.parts`` names them, in order, with their output widths. ``engine/weights.py`` copies
each checkpoint tensor into its rows while loading, and writes them back out by the same names, so the model has
one forward path and the fused matrix is the only copy of the weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .invariant import tiled_linear


class FusedLinear(nn.Module):
    invariant = False  # batch-invariant product (``invariant.py``), set by the model

    def __init__(self, in_features: int, parts: dict[str, int]):
        super().__init__()
        self.parts = dict(parts)  # checkpoint module name -> output rows, in row order
        self.weight = nn.Parameter(torch.empty(sum(self.parts.values()), in_features))
        for _, rows in self.row_slices():  # nn.Linear's initialisation, part by part
            nn.init.kaiming_uniform_(self.weight.data[rows], a=math.sqrt(5))

    def row_slices(self):
        """``(part name, rows of the weight)`` in order."""
        start = 0
        for name, n in self.parts.items():
            yield name, slice(start, start + n)
            start += n

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Each part's output, in ``parts`` order (views of one matmul's result)."""
        out = tiled_linear(x, self.weight) if self.invariant else F.linear(x, self.weight)
        return out.split(list(self.parts.values()), dim=-1)
