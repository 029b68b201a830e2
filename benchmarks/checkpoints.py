"""Tiny random DiffusionGemma checkpoints in the real Hugging Face on-disk layout.

The weights are written by transformers' own ``save_pretrained`` (the reference implementation), so the
files, names, shapes and config keys are exactly what a real checkpoint holds; only the sizes are tiny.
The tokenizer is a byte-level BPE trained here on real text (Python standard library sources), saved as
``tokenizer.json`` plus a ``tokenizer_config.json`` carrying a Gemma-style chat template.

Used by the tests, ``benchmarks/`` and ``redraft demo-checkpoint`` (the demo model, random weights: it
produces gibberish, but exercises every part of the system). Needs transformers (the ``dev`` extra).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.training.tokenizer_train import CHAT_TEMPLATE
from pipelines.demo_checkpoint import stdlib_text

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"]


# Several shapes, so parity covers different layer-type patterns, head dims, KV-head counts, expert counts,
# sliding windows and canvas lengths.
CONFIGS: dict[str, dict] = {
    "base": dict(
        canvas_length=16,
        text=dict(
            hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, global_head_dim=32, num_global_key_value_heads=1,
            sliding_window=8, num_experts=4, top_k_experts=2, moe_intermediate_size=32,
            layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        ),
    ),
    "gemma_pattern": dict(  # the real model's 5:1 sliding/full pattern, last layer full
        canvas_length=24,
        text=dict(
            hidden_size=48, intermediate_size=64, num_hidden_layers=6, num_attention_heads=6,
            num_key_value_heads=3, head_dim=8, global_head_dim=16, num_global_key_value_heads=2,
            sliding_window=12, num_experts=8, top_k_experts=3, moe_intermediate_size=24,
            layer_types=None,
        ),
    ),
    "wide_heads": dict(  # one KV head on full layers, more experts, window larger than the canvas
        canvas_length=8,
        text=dict(
            hidden_size=32, intermediate_size=80, num_hidden_layers=3, num_attention_heads=2,
            num_key_value_heads=1, head_dim=32, global_head_dim=64, num_global_key_value_heads=1,
            sliding_window=32, num_experts=16, top_k_experts=4, moe_intermediate_size=16,
            layer_types=["full_attention", "sliding_attention", "full_attention"],
        ),
    ),
    "bench": dict(  # the benchmark size (README.md, 'Performance'): hidden 128, 6 layers, 8 experts top-2, canvas 32
        canvas_length=32,
        text=dict(
            hidden_size=128, intermediate_size=256, num_hidden_layers=6, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, global_head_dim=64, num_global_key_value_heads=1,
            sliding_window=64, num_experts=8, top_k_experts=2, moe_intermediate_size=64, layer_types=None,
        ),
    ),
}

_TINY_VISION = dict(
    model_type="gemma4_vision", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
    num_attention_heads=2, num_key_value_heads=2, head_dim=8,
)


def training_text(max_chars: int = 400_000) -> list[str]:
    """Real text to train the tiny tokenizer on: Python standard library sources on this machine."""
    return stdlib_text(max_chars)


def build_tokenizer(vocab_size: int):
    """A byte-level BPE (any Unicode text round-trips) with the special tokens at Gemma's ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(training_text(), trainer=trainer)
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    return tok


def write_tokenizer(path: str | Path, vocab_size: int) -> None:
    path = Path(path)
    tok = build_tokenizer(vocab_size)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
        "add_bos_token": True, "chat_template": CHAT_TEMPLATE,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }, indent=2))


def _randomize(model: torch.nn.Module, seed: int, embed_std: float) -> None:
    """Give every parameter and buffer a non-trivial random value (norm weights, scalars, router scales
    included), so parity exercises each of them rather than their identity initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in list(model.named_parameters()) + list(model.named_buffers()):
            if not p.is_floating_point() or "inv_freq" in name or "embed_scale" in name:
                continue
            if "vision" in name:
                continue
            if "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g) * embed_std)
            elif p.ndim == 1 or "layer_scalar" in name:  # norms, scales, per-expert scales, layer scalars
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)


def make_tiny_checkpoint(
    path: str | Path,
    name: str = "base",
    *,
    vocab_size: int = 512,
    seed: int = 0,
    embed_std: float = 0.5,
    max_shard_size: str | None = None,
    dtype: torch.dtype = torch.float32,
    with_tokenizer: bool = True,
    eos_scale: float = 1.0,
):
    """Write a tiny random DiffusionGemma checkpoint with transformers' ``save_pretrained``.

    Args:
        path: directory to write into (created).
        name: one of ``CONFIGS``.
        max_shard_size: e.g. ``"40KB"`` to write shards plus ``model.safetensors.index.json``.
        eos_scale: multiply the EOS embedding (tied output row) so rows end at EOS early and at varied
            canvases, as real models do (used by the adaptive benchmark).

    Returns:
        The transformers model (eval mode, fp32) that was saved, for use as the numerical reference.
    """
    try:
        from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion
    except ImportError:  # pragma: no cover - depends on the install
        raise ImportError("writing a demo checkpoint needs transformers>=5.19: pip install -e '.[dev]'") from None

    spec = CONFIGS[name]
    text = dict(spec["text"], vocab_size=vocab_size, max_position_embeddings=4096)
    if text.get("layer_types") is None:
        text.pop("layer_types")
    cfg = DiffusionGemmaConfig(text_config=text, vision_config=dict(_TINY_VISION), canvas_length=spec["canvas_length"])
    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(cfg).eval()
    _randomize(model, seed, embed_std)
    if eos_scale != 1.0:
        with torch.no_grad():
            model.model.decoder.embed_tokens.weight[text.get("eos_token_id", 1)] *= eos_scale
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.to(dtype).save_pretrained(path, **kwargs)
    model.float()
    if with_tokenizer:  # a tokenizer may cover fewer ids than the model's vocabulary (as real ones often do)
        write_tokenizer(path, min(vocab_size, 4096))
    return model
