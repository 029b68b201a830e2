"""DiffusionGemma's entropy-bounded renoising sampler, as batched tensor code.

One denoising pass, for a batch of canvases (B rows, C positions, V vocabulary):

1. logits are divided by the pass temperature (in place: the one fp32 ``[B, C, V]`` tensor of the step);
2. per position, chunk by chunk: softmax, entropy, a sampled candidate (inverse-CDF draw from the row's own
   ``torch.Generator``),
   the argmax, and the soft embedding ``softmax @ E * sqrt(D)`` that self-conditions the next pass;
3. ``accept_and_renoise`` (the default ``entropy_bound`` sampler; ``accept.py`` holds all three): the
   lowest-entropy positions are accepted while their cumulative entropy less the current one stays within
   ``entropy_bound``; every other position is re-drawn uniformly from the vocabulary.
   Acceptance is recomputed over all positions each pass, which is what lets the model correct itself;
4. ``StopTracker``: a row stops when its argmax canvas equals the previous ``stability_threshold`` argmaxes and
   its mean entropy is below ``confidence_threshold``.
"""

from __future__ import annotations

import torch

from .accept import entropy_bound_mask


def accept_and_renoise(entropy_BC: torch.Tensor, candidates_BC: torch.Tensor, noise_BC: torch.Tensor,
                       entropy_bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns the next canvas (accepted candidates, noise elsewhere) and the accepted-position mask (the
    ``entropy_bound`` sampler; ``accept.accept_mask`` chooses among all of them)."""
    accepted_BC = entropy_bound_mask(entropy_BC, entropy_bound)
    return torch.where(accepted_BC, candidates_BC, noise_BC), accepted_BC


class StopTracker:
    """Stable-and-confident stopping, per row. ``history`` holds the last ``stability_threshold`` argmax canvases
    (-1 before the first pass, so a row can never stop on its first pass when the threshold is positive).
    One row per slot, allocated once; a slot's row is reset when a new canvas starts in it."""

    def __init__(self, batch: int, canvas: int, stability_threshold: int, confidence_threshold: float, device):
        self.confidence_threshold = confidence_threshold
        self.history = torch.full((stability_threshold, batch, canvas), -1, dtype=torch.long, device=device)

    def update(self, rows: torch.Tensor, argmax_BC: torch.Tensor, entropy_BC: torch.Tensor,
               free_B: torch.Tensor | None = None) -> torch.Tensor:
        """Record this pass for ``rows`` (indices into the tracker's batch); returns their stop flags. The mean
        entropy is over each row's ``free_B`` denoised positions (default: all; clamped positions have zero
        entropy and would otherwise dilute the mean)."""
        if self.history.shape[0] == 0:
            stable = torch.ones(rows.shape[0], dtype=torch.bool, device=argmax_BC.device)
        else:
            past = self.history[:, rows]
            stable = (past == argmax_BC[None]).all(-1).all(0)
            self.history[:, rows] = torch.cat([past[1:], argmax_BC[None]], 0)
        mean = entropy_BC.mean(-1) if free_B is None else entropy_BC.sum(-1) / free_B
        return stable & (mean < self.confidence_threshold)

    def reset(self, rows: torch.Tensor) -> None:
        self.history[:, rows] = -1


def position_chunk(vocab_size: int, budget_elems: int = 1 << 22) -> int:
    """Positions handled at once per row, from the vocabulary size alone (never from the batch), so a row's
    random draws are the same whatever batch it runs in. 2**22 fp32 elements = 16 MiB per temporary."""
    return max(1, budget_elems // vocab_size)


@torch.no_grad()
def sample_pass(logits_BCV: torch.Tensor, temperature: float | torch.Tensor, generators: list[torch.Generator],
                soft_embed, chunk: int, top_prob_BC: torch.Tensor | None = None):
    """Steps 1-2 above. ``logits_BCV`` is scaled in place by ``temperature`` (one value, or one per row ``[B]``:
    rows of a continuous batch are at different passes); ``soft_embed(probs_NV)`` maps probabilities to
    self-conditioning embeddings; ``chunk`` is how many positions' full-vocabulary temporaries may exist at once.
    Returns candidates ``[B, C]``, argmax ``[B, C]``, entropy ``[B, C]`` (fp32) and soft embeddings ``[B, C, D]``.
    ``top_prob_BC`` (fp32 ``[B, C]``), when given, is filled with each position's largest probability (what the
    ``confidence`` and ``top_k`` samplers rank by).

    When whole rows fit in ``chunk``, blocks of rows are processed together; otherwise each row is cut at fixed
    position boundaries. Either way each row's sample is one inverse-CDF draw per fixed slice of that row,
    with the row's generator, so its draws never depend on the batch around it.
    """
    b, c, v = logits_BCV.shape
    logits_BCV.div_(temperature.view(-1, 1, 1) if isinstance(temperature, torch.Tensor) else temperature)
    device = logits_BCV.device
    candidates = torch.empty(b, c, dtype=torch.long, device=device)
    argmax = torch.empty(b, c, dtype=torch.long, device=device)
    entropy = torch.empty(b, c, dtype=torch.float32, device=device)
    soft = None
    if chunk >= c:
        rows_per_block = chunk // c
        blocks = [(r, slice(0, c), min(rows_per_block, b - r)) for r in range(0, b, rows_per_block)]
    else:
        blocks = [(r, slice(s, min(s + chunk, c)), 1) for r in range(b) for s in range(0, c, chunk)]
    for row, pos, n_rows in blocks:
        z = logits_BCV[row:row + n_rows, pos]  # [n_rows, P, V]
        logp = torch.log_softmax(z, dim=-1)
        p = torch.softmax(z, dim=-1)  # not logp.exp(): exp of very negative values is ~15x slower on CPU
        entropy[row:row + n_rows, pos] = -(p * logp).sum(-1)
        argmax[row:row + n_rows, pos] = z.argmax(-1)
        if top_prob_BC is not None:
            top_prob_BC[row:row + n_rows, pos] = p.amax(-1)
        emb = soft_embed(p.view(-1, v))
        if soft is None:
            soft = torch.empty(b, c, emb.shape[-1], dtype=emb.dtype, device=device)
        soft[row:row + n_rows, pos] = emb.view(n_rows, -1, emb.shape[-1])
        cdf = p.cumsum_(-1)  # p is not needed after this: reuse its memory
        # inverse-CDF draw: the first index whose cdf exceeds a uniform variate, one random number per position
        # (torch.multinomial draws one per vocabulary entry). The uniforms come from each row's own generator
        # (the only per-row op); the search runs once over the block.
        u = torch.stack([torch.rand(cdf.shape[1:-1] + (1,), generator=generators[row + j], device=device,
                                    dtype=cdf.dtype) for j in range(n_rows)])
        idx = torch.searchsorted(cdf, u * cdf[..., -1:], right=True)
        candidates[row:row + n_rows, pos] = idx.squeeze(-1).clamp_(max=v - 1)
    return candidates, argmax, entropy, soft
