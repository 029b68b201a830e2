"""Which positions a denoising pass accepts: the three samplers' rules, as pure batched functions.

Every sampler shares the pass (``entropy_bound.sample_pass``), the stop rule (``StopTracker``) and the per-row
generators; only the accept mask differs. Acceptance is recomputed over all positions every pass and every
position that is not accepted is renoised, so a token accepted on one pass can be corrected on a later one.

Shapes: B = rows, C = canvas positions. ``entropy_BC`` is each position's entropy and ``top_prob_BC`` its
largest probability, both at the pass temperature (fp32). A position with zero entropy (a clamped position, or
one restricted to a single token) is *settled*: every sampler accepts it and it takes none of the budget.

* ``entropy_bound``: the lowest-entropy positions while their summed entropy, less the current one, stays within
  ``entropy_bound`` (DiffusionGemma's reference rule);
* ``confidence``: every position whose top probability is >= ``accept_threshold``, and always the most confident
  unsettled position (Fast-dLLM's parallel-decoding rule: each pass accepts at least one);
* ``top_k``: the ``accept_k`` unsettled positions with the highest top probability (LLaDA's low-confidence
  remasking, adapted to renoising). Ties go to the lower position (stable sort).
"""

from __future__ import annotations

import torch

SAMPLERS = ("entropy_bound", "confidence", "top_k")


def entropy_bound_mask(entropy_BC: torch.Tensor, bound: float) -> torch.Tensor:
    sorted_BC, order_BC = torch.sort(entropy_BC, dim=-1, descending=False)
    keep_sorted = torch.cumsum(sorted_BC, dim=-1) - sorted_BC <= bound
    return torch.zeros_like(keep_sorted).scatter(-1, order_BC, keep_sorted)


def confidence_mask(entropy_BC: torch.Tensor, top_prob_BC: torch.Tensor, threshold: float) -> torch.Tensor:
    settled_BC = entropy_BC == 0
    # the most confident unsettled position (position 0, a settled one, when every position is settled)
    best_B = torch.where(settled_BC, -1.0, top_prob_BC).argmax(-1, keepdim=True)
    at_least_one_BC = torch.zeros_like(settled_BC).scatter(-1, best_B, True)
    return (top_prob_BC >= threshold) | settled_BC | at_least_one_BC


def top_k_mask(entropy_BC: torch.Tensor, top_prob_BC: torch.Tensor, k: int) -> torch.Tensor:
    settled_BC = entropy_BC == 0
    # settled positions sort first (key 2 > any probability), then by falling top probability
    key_BC = torch.where(settled_BC, 2.0, top_prob_BC)
    order_BC = torch.sort(key_BC, dim=-1, descending=True, stable=True).indices
    rank_C = torch.arange(key_BC.shape[-1], device=key_BC.device)
    keep_sorted = rank_C[None, :] < settled_BC.sum(-1, keepdim=True) + k
    return torch.zeros_like(keep_sorted).scatter(-1, order_BC, keep_sorted)


def accept_mask(entropy_BC: torch.Tensor, top_prob_BC: torch.Tensor | None, params) -> torch.Tensor:
    """The positions this pass accepts under ``params.sampler`` (a ``SamplingParams``); ``top_prob_BC`` may be
    None for ``entropy_bound``, which does not read it."""
    if params.sampler == "entropy_bound":
        return entropy_bound_mask(entropy_BC, params.entropy_bound)
    if params.sampler == "confidence":
        return confidence_mask(entropy_BC, top_prob_BC, params.accept_threshold)
    if params.sampler == "top_k":
        return top_k_mask(entropy_BC, top_prob_BC, params.accept_k)
    raise ValueError(f"SamplingParams.sampler: got {params.sampler!r}; allowed: {', '.join(SAMPLERS)}")
