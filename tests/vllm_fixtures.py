"""A tiny random autoregressive checkpoint (Llama architecture) for the vLLM backend's tests and benchmark.

The weights are written by transformers' own ``save_pretrained``, so vLLM loads them exactly as it loads a
real Llama checkpoint; the tokenizer is the same locally trained byte-level BPE (and Gemma-style chat
template) as redraft's tiny DiffusionGemma (``benchmarks.checkpoints.write_tokenizer``), so both backends see the same
prompts as the same token ids. Random weights: the text is gibberish, the plumbing is real.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# Special token ids of benchmarks.checkpoints' tokenizer (Gemma's layout).
PAD_ID, EOS_ID, BOS_ID = 0, 1, 2


def make_tiny_llama_checkpoint(path: str | Path, *, vocab_size: int = 512, hidden_size: int = 64,
                               num_layers: int = 2, max_positions: int = 1024, seed: int = 0) -> Path:
    """Write a tiny random ``LlamaForCausalLM`` plus tokenizer into ``path`` (created) and return it.

    Args:
        path: target directory.
        vocab_size: model vocabulary (the tokenizer is trained to the same size).
        hidden_size, num_layers: model size. Heads are 32 wide (``hidden_size // 32`` query heads, half as many
            KV heads): vLLM's CPU attention has no kernel for head sizes under 32 ("Unsupported CPU attention
            configuration: head_dim=16").
        max_positions: ``max_position_embeddings``, the longest sequence vLLM will accept.
        seed: weight initialisation seed.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from benchmarks.checkpoints import write_tokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=hidden_size // 32,
        num_key_value_heads=max(1, hidden_size // 64),
        max_position_embeddings=max_positions, pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        tie_word_embeddings=False, torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(path)
    write_tokenizer(path, vocab_size)
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A tiny random Llama checkpoint, written once per test session."""
    return make_tiny_llama_checkpoint(tmp_path_factory.mktemp("tiny-llama"))
