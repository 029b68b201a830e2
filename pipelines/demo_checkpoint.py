"""``redraft demo-checkpoint``: a tiny DiffusionGemma checkpoint with random weights in the real Hugging Face
layout, written by redraft's own exporter (``engine.training.model_io``), so it needs no extra package.

Its text is gibberish; it runs every part of redraft (``redraft run``, ``redraft serve``) on any machine. The
tokenizer is a byte-level BPE trained on this machine's Python standard library sources.
"""

from __future__ import annotations

import sysconfig
import tempfile
from pathlib import Path

from engine.config import FULL, SLIDING
from engine.training.model_io import ModelSpec, build_model, export_checkpoint
from engine.training.tokenizer_train import save_tokenizer, train_bpe

SHAPES = {
    "base": ModelSpec(vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, global_head_dim=32,
                      num_global_key_value_heads=1, sliding_window=8, num_experts=4, top_k_experts=2,
                      moe_intermediate_size=32, canvas_length=16, layer_types=(SLIDING, FULL) * 2),
    "bench": ModelSpec(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=6,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=32, global_head_dim=64,
                       num_global_key_value_heads=1, sliding_window=64, num_experts=8, top_k_experts=2,
                       moe_intermediate_size=64, canvas_length=32),
}


def stdlib_text(max_chars: int = 400_000) -> list[str]:
    """Real text for the tokenizer: Python standard library sources on this machine, in name order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts, total = [], 0
    for path in sorted(root.glob("*.py")):
        texts.append(path.read_text(encoding="utf-8", errors="replace"))
        total += len(texts[-1])
        if total >= max_chars:
            break
    return texts


def write_demo_checkpoint(path: str | Path, shape: str = "base", seed: int = 0) -> Path:
    """Write the checkpoint folder at ``path``; ``KeyError`` for an unknown ``shape``."""
    spec = SHAPES[shape]
    with tempfile.TemporaryDirectory() as tok_dir:
        save_tokenizer(train_bpe(stdlib_text(), spec.vocab_size), tok_dir)
        return export_checkpoint(build_model(spec, seed), spec, Path(tok_dir), path,
                                 metadata={"made_by": "redraft demo-checkpoint", "shape": shape, "seed": seed,
                                           "weights": "random"})
