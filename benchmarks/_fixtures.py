"""What the benchmarks need besides the engine: timing with equal call counts, a tiny random Llama checkpoint for
the vLLM side, and a JSON Lines writer. Nothing here imports ``tests`` or pytest (the tests import from here)."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

# Special token ids of benchmarks.checkpoints's tokenizer (Gemma's layout).
PAD_ID, EOS_ID, BOS_ID = 0, 1, 2


def timed(fn, repeats: int, warmup: int = 1) -> tuple[dict, object]:
    """``warmup`` untimed calls, then exactly ``repeats`` timed calls of ``fn``: every side of a comparison is
    measured this way, so none gets more tries at its minimum. Returns ``({"calls", "median_seconds",
    "min_seconds"}, the last call's result)``."""
    if repeats < 1:
        raise ValueError(f"repeats: got {repeats}; at least 1 timed call is needed")
    for _ in range(warmup):
        fn()
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return {"calls": repeats, "median_seconds": round(statistics.median(times), 4),
            "min_seconds": round(min(times), 4)}, out


def print_report(report: dict, out: Path | None = None) -> str:
    """Print ``report`` as indented JSON and, when ``out`` is given, also write it there (the ``--out`` flag
    of every benchmark). Returns the text."""
    text = json.dumps(report, indent=2)
    print(text)
    if out is not None:
        Path(out).write_text(text + "\n")
    return text


def write_jsonl(path: Path, rows: list) -> Path:
    """One JSON object per line (a string row is written as it is)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def make_tiny_llama_checkpoint(path: str | Path, *, vocab_size: int = 512, hidden_size: int = 64,
                               num_layers: int = 2, max_positions: int = 1024, seed: int = 0) -> Path:
    """Write a tiny random ``LlamaForCausalLM`` plus tokenizer into ``path`` (created) and return it.

    The weights are written by transformers' own ``save_pretrained``, so vLLM loads them exactly as it loads a
    real Llama checkpoint; the tokenizer is redraft's tiny DiffusionGemma's (``benchmarks.checkpoints.write_tokenizer``),
    so both backends see the same prompts as the same token ids. Random weights: the text is gibberish.

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
