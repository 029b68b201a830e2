"""A denoising pass is GPU-shaped: at most one host synchronisation per pass for the whole batch, and the number
of aten ops it launches does not grow with the batch (no per-row Python loops over tensors), apart from the
per-row random draws (each row owns a ``torch.Generator``; one draw op per row for the candidates and one for
the noise).

Counted with a ``TorchDispatchMode`` on a tiny random checkpoint, on the CPU: host syncs are the aten ops that
read device memory on the host (``_local_scalar_dense``, behind ``.item()`` / ``bool()`` / ``int()``;
``nonzero``; boolean-mask indexing and ``masked_select``), plus every ``Tensor.tolist()`` / ``Tensor.item()``
call, counted by wrapping them (``tolist`` does not go through the dispatcher).
"""

from __future__ import annotations

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from engine import FREE, DiffusionEngine, SamplingParams

SYNC_OPS = {"aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.item"}
RANDOM_OPS = {"aten.rand", "aten.randint", "aten.uniform_", "aten.random_"}


class Counter(TorchDispatchMode):
    """Counts aten ops by name and host syncs (see the module docstring)."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()
        self.syncs = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        self.ops[name] += 1
        if name in SYNC_OPS:
            self.syncs[name] += 1
        elif name in ("aten.index", "aten.index_put_", "aten.index_put") and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ())):
            self.syncs[f"{name} (bool mask)"] += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture
def counted(monkeypatch):
    """A ``Counter`` that also counts ``Tensor.tolist`` / ``Tensor.item`` calls made while it is active."""
    counter = Counter()
    for method in ("tolist", "item"):
        original = getattr(torch.Tensor, method)

        def wrapped(self, *a, _original=original, _method=method, **k):
            if counter.active:
                counter.syncs[f"Tensor.{_method}"] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, method, wrapped)
    counter.active = False
    return counter


def _run(counter, fn):
    counter.active = True
    try:
        with counter:
            out = fn()
    finally:
        counter.active = False
    return out


@pytest.fixture(scope="module")
def peaked(checkpoint_factory):
    """Sharp distributions: rows stop at different passes and canvases (the adaptive path is exercised)."""
    path, _ = checkpoint_factory("base", embed_std=4.0)
    return DiffusionEngine.from_pretrained(path, dtype=torch.float32)


def _prompts(b, same_length=False):
    return [[5 + i % 7] * (6 if same_length else 3 + (i * 5) % 11) for i in range(b)]


@pytest.mark.parametrize("fixed", [False, True])
def test_at_most_one_host_sync_per_pass(peaked, counted, fixed):
    params = SamplingParams(max_new_tokens=40, max_denoising_steps=12, fixed_steps=fixed, stability_threshold=0,
                            confidence_threshold=3.0, seed=3)
    b = 6
    prompts = _prompts(b)
    rows = peaked._check_prompt_ids(prompts)  # validation reads the prompts on the host: outside the count
    passes = []
    res = _run(counted, lambda: peaked.generate_ids(rows, params, seeds=list(range(b)),
                                                    on_pass=lambda r, a: passes.append(len(r))))
    if not fixed:
        assert len({r.num_passes for r in res}) > 1  # rows stopped at different passes
    syncs = sum(counted.syncs.values())
    # one read per pass at most (the stop decision), plus one for the tokens at the end of the call
    assert syncs <= len(passes) + 1, (syncs, len(passes), dict(counted.syncs))
    if fixed:  # fixed passes: the host reads only on passes where canvases end (3 canvases), and the tokens
        assert syncs <= 3 + 1, dict(counted.syncs)


def test_clamped_canvases_at_most_one_host_sync_per_pass(peaked, counted):
    v = peaked.config.vocab_size
    masks = torch.zeros(2, v, dtype=torch.bool)
    masks[0, 10:20] = True
    masks[1, 100:300] = True
    known = [[FREE] * 5 + [30, 31] + [FREE] * 20 + [40] * 3, [50] * 10 + [FREE] * 3, [FREE] * 40]
    allowed = [[0] * 5 + [-1] * 25, None, [1, 0] * 20]
    params = SamplingParams(max_denoising_steps=10, seed=5, stability_threshold=0, confidence_threshold=3.0)
    passes = []
    _run(counted, lambda: peaked.denoise_canvases(_prompts(3), known, params, seeds=[1, 2, 3], allowed=allowed,
                                                  allowed_masks=masks, on_pass=lambda r, a: passes.append(1)))
    syncs = sum(counted.syncs.values())
    # per pass at most one; per call: the empty-mask check of the mask table (nonzero + tolist) and the tokens
    assert syncs <= len(passes) + 3, (syncs, len(passes), dict(counted.syncs))


def _ops_per_pass(engine, b, counter, known=None):
    """Aten ops of one more fixed pass per canvas (two runs differing by one pass), split into the per-row
    random draws and the rest."""
    per_run = []
    prompts = _prompts(b, same_length=True)  # (rows of different lengths add attention masks: a constant)
    for steps in (4, 5):
        params = SamplingParams(max_new_tokens=16, max_denoising_steps=steps, fixed_steps=True, ignore_eos=True)
        counter.ops.clear()
        if known is None:
            _run(counter, lambda: engine.generate_ids(prompts, params, seeds=list(range(b))))
        else:
            _run(counter, lambda: engine.denoise_canvases(prompts, [known] * b, params, seeds=list(range(b))))
        per_run.append(collections.Counter(counter.ops))
    diff = per_run[1]
    diff.subtract(per_run[0])
    random = sum(n for name, n in diff.items() if name in RANDOM_OPS)
    return sum(diff.values()) - random, random


@pytest.mark.parametrize("clamped", [False, True])
def test_ops_per_pass_do_not_grow_with_the_batch(peaked, counted, clamped):
    known = [FREE] * 6 + [30, 31] + [FREE] * 8 if clamped else None
    counts = {b: _ops_per_pass(peaked, b, counted, known) for b in (1, 4, 32)}
    rest = {b: c[0] for b, c in counts.items()}
    assert max(rest.values()) - min(rest.values()) <= 4, rest
    assert {b: c[1] for b, c in counts.items()} == {b: 2 * b for b in counts}  # one candidate + one noise draw
