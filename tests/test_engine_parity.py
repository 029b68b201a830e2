"""Numerical parity of redraft's engine with transformers' DiffusionGemma on the same checkpoints."""

from __future__ import annotations

import pytest
import torch

from engine import DiffusionEngine
from benchmarks.checkpoints import CONFIGS

ATOL = 1e-4


def _inputs(engine, lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    vocab, canvas_len = engine.config.vocab_size, engine.canvas_length
    prompts = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]
    canvas = torch.randint(0, vocab, (len(lengths), canvas_len), generator=g)
    self_cond = torch.randn(len(lengths), canvas_len, vocab, generator=g) * 3
    return prompts, canvas, self_cond


def _reference_batched(ref, prompts, canvas, self_cond):
    """transformers' forward on the left-padded batch, with its attention masks."""
    longest = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (longest - len(p)) + p for p in prompts])
    mask = torch.arange(longest)[None] >= torch.tensor([longest - len(p) for p in prompts])[:, None]
    dec_mask = torch.nn.functional.pad(mask, (0, canvas.shape[1]), value=True)
    with torch.no_grad():
        return ref(input_ids=ids, attention_mask=mask, decoder_input_ids=canvas, decoder_attention_mask=dec_mask,
                   self_conditioning_logits=self_cond).logits


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("with_self_conditioning", [False, True])
def test_canvas_logits_match_transformers(checkpoint_factory, name, with_self_conditioning):
    path, ref = checkpoint_factory(name, embed_std=0.15)
    engine = DiffusionEngine.from_pretrained(path, device="cpu", dtype=torch.float32)
    window = engine.config.sliding_window
    # different lengths, one shorter and one longer than the sliding window
    prompts, canvas, self_cond = _inputs(engine, [3, window - 1, 2 * window + 5])
    self_cond = self_cond if with_self_conditioning else None
    ours = engine.canvas_logits(prompts, canvas, self_condition=self_cond)
    assert ours.shape == (3, engine.canvas_length, engine.config.vocab_size) and ours.dtype == torch.float32
    assert ours.abs().max() > 1.0  # not a degenerate model

    singles = []
    for i, prompt in enumerate(prompts):  # each row alone, no padding in the reference
        with torch.no_grad():
            singles.append(ref(input_ids=torch.tensor([prompt]), decoder_input_ids=canvas[i:i + 1],
                               self_conditioning_logits=None if self_cond is None else self_cond[i:i + 1]).logits[0])
        torch.testing.assert_close(ours[i], singles[i], atol=ATOL, rtol=0)
    # The reference's own left-padded batch shifts RoPE positions by the padding, which changes its fp32 rounding;
    # ours (per-row positions) must be as close to it as the reference is to itself, and never beyond that noise.
    batched = _reference_batched(ref, prompts, canvas, self_cond)
    own_noise = (batched - torch.stack(singles)).abs().max().item()
    torch.testing.assert_close(ours, batched, atol=max(ATOL, 2 * own_noise), rtol=0)


def test_sharded_checkpoint_gives_the_same_logits(checkpoint_factory):
    single, _ = checkpoint_factory("base", embed_std=0.15)
    sharded, _ = checkpoint_factory("base", embed_std=0.15, max_shard_size="60KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    a = DiffusionEngine.from_pretrained(single, dtype=torch.float32)
    b = DiffusionEngine.from_pretrained(sharded, dtype=torch.float32)
    assert b.load_report["files"] > 1
    prompts, canvas, _ = _inputs(a, [4, 9])
    torch.testing.assert_close(a.canvas_logits(prompts, canvas), b.canvas_logits(prompts, canvas), atol=0, rtol=0)


def test_bfloat16_stays_close_to_float32(checkpoint_factory):
    path, _ = checkpoint_factory("base", embed_std=0.15)
    fp32 = DiffusionEngine.from_pretrained(path, dtype=torch.float32)
    bf16 = DiffusionEngine.from_pretrained(path, dtype="bfloat16")
    assert bf16.model.dtype == torch.bfloat16
    prompts, canvas, _ = _inputs(fp32, [5, 11])
    a, b = fp32.canvas_logits(prompts, canvas), bf16.canvas_logits(prompts, canvas)
    assert b.dtype == torch.float32
    # bf16 keeps ~3 significant digits: the logits stay close and the argmax mostly agrees
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.75
    assert (a - b).abs().mean() < 0.1 * a.abs().mean()


def test_incremental_commit_equals_one_shot_prefill(tiny_engine):
    """Committing a canvas through the encoder (as generate does) leaves the same cache as encoding the
    prompt and canvas in one go, across sliding-window boundaries."""
    engine = tiny_engine
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(3, 500, (n,), generator=g).tolist() for n in (2, 11)]
    canvas = torch.randint(0, 500, (2, engine.canvas_length), generator=g)
    cache = engine._prefill(prompts, 2 * engine.canvas_length)
    engine.model.encode(canvas, cache)
    whole = engine._prefill([p + c for p, c in zip(prompts, canvas.tolist())], 0)
    assert cache.lengths == whole.lengths == [len(p) + engine.canvas_length for p in prompts]
    for layer in range(engine.config.num_hidden_layers):
        for i, p in enumerate(prompts):
            n = len(p) + engine.canvas_length
            torch.testing.assert_close(cache.k[layer][i, :, :n], whole.k[layer][i, :, :n], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(cache.v[layer][i, :, :n], whole.v[layer][i, :, :n], atol=1e-5, rtol=1e-5)


def test_grouped_experts_match_reference_path():
    from engine.layers.moe import experts_grouped, experts_reference

    g = torch.Generator().manual_seed(0)
    n, d, e, k, width = 37, 16, 6, 2, 8
    x = torch.randn(n, d, generator=g)
    w13, w2 = torch.randn(e, 2 * width, d, generator=g), torch.randn(e, d, width, generator=g)
    ids = torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(n)])
    ids[:, 0] = 0  # one expert gets many tokens, some get none
    weights = torch.rand(n, k, generator=g)
    torch.testing.assert_close(experts_grouped(x, weights, ids, w13, w2), experts_reference(x, weights, ids, w13, w2),
                               atol=1e-5, rtol=1e-5)
