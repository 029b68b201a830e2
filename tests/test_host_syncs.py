"""A denoising pass is GPU-shaped: at most one host synchronisation per pass for the whole batch, and the number
of aten ops it launches does not grow with the batch (no per-row Python loops over tensors), apart from the
per-row random draws (each row owns a ``torch.Generator``: one draw op per row for the candidates and one for
the noise). Counted on a tiny random checkpoint with ``benchmarks.pass_ops.OpCounter`` (a ``TorchDispatchMode``
counting ``_local_scalar_dense``, ``nonzero``, ``masked_select``, boolean-mask indexing, and every
``Tensor.tolist`` / ``Tensor.item`` call)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.pass_ops import OpCounter, ops_per_pass, prompts
from engine import FREE, DiffusionEngine, SamplingParams


@pytest.fixture(scope="module")
def peaked(checkpoint_factory):
    """Sharp distributions: rows stop at different passes and canvases (the adaptive path is exercised)."""
    path, _ = checkpoint_factory("base", embed_std=4.0)
    return DiffusionEngine.from_pretrained(path, dtype=torch.float32)


def test_counter_sees_every_kind_of_host_sync():
    x = torch.arange(6.0)
    counter = OpCounter()
    with counter.counting():
        x.sum().item()
        bool(x.any())
        x.tolist()
        (x > 2).nonzero()
        x[x > 2]
        torch.masked_select(x, x > 3)
    assert set(counter.syncs) == {"Tensor.item", "aten._local_scalar_dense", "Tensor.tolist", "aten.nonzero",
                                  "aten.index (bool mask)", "aten.masked_select"}


@pytest.mark.parametrize("fixed", [False, True])
def test_at_most_one_host_sync_per_pass(peaked, fixed):
    params = SamplingParams(max_new_tokens=40, max_denoising_steps=12, fixed_steps=fixed, stability_threshold=0,
                            confidence_threshold=3.0, seed=3)
    b, passes, counter = 6, [], OpCounter()
    with counter.counting():
        res = peaked.generate_ids(prompts(b), params, seeds=list(range(b)), on_pass=lambda r, a: passes.append(1))
    if not fixed:
        assert len({r.num_passes for r in res}) > 1  # rows stopped at different passes
    syncs = sum(counter.syncs.values())
    # one read per pass at most (the stop decision), plus one for the tokens at the end of the call
    assert syncs <= len(passes) + 1, (syncs, len(passes), dict(counter.syncs))
    if fixed:  # fixed passes: the host reads only on passes where canvases end (3 canvases), and the tokens
        assert syncs <= 3 + 1, dict(counter.syncs)


def test_clamped_canvases_at_most_one_host_sync_per_pass(peaked):
    v = peaked.config.vocab_size
    masks = torch.zeros(2, v, dtype=torch.bool)
    masks[0, 10:20] = True
    masks[1, 100:300] = True
    known = [[FREE] * 5 + [30, 31] + [FREE] * 20 + [40] * 3, [50] * 10 + [FREE] * 3, [FREE] * 40]
    allowed = [[0] * 5 + [-1] * 25, None, [1, 0] * 20]
    params = SamplingParams(max_denoising_steps=10, seed=5, stability_threshold=0, confidence_threshold=3.0)
    passes, counter = [], OpCounter()
    with counter.counting():
        peaked.denoise_canvases(prompts(3), known, params, seeds=[1, 2, 3], allowed=allowed, allowed_masks=masks,
                                on_pass=lambda r, a: passes.append(1))
    syncs = sum(counter.syncs.values())
    # per pass at most one; per call: the empty-mask check of the mask table (nonzero + tolist) and the tokens
    assert syncs <= len(passes) + 3, (syncs, len(passes), dict(counter.syncs))


@pytest.mark.parametrize("clamped", [False, True])
def test_ops_per_pass_do_not_grow_with_the_batch(peaked, clamped):
    known = [FREE] * 6 + [30, 31] + [FREE] * 8 if clamped else None
    counts = {b: ops_per_pass(peaked, b, known) for b in (1, 4, 32)}
    other = {b: c["other"] for b, c in counts.items()}
    assert max(other.values()) - min(other.values()) <= 4, other
    assert {b: c["random_draws"] for b, c in counts.items()} == {b: 2 * b for b in counts}  # candidates + noise
