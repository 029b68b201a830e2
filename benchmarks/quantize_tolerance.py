"""How far quantized expert weights move the logits, against how far bf16 rounding alone moves them, on the tiny
parity checkpoints (``benchmarks.checkpoints.CONFIGS``, random weights, embedding std 0.15), fp32 and bf16 on the CPU.

Per checkpoint: three prompts (3 tokens, one under the sliding window, two windows and more) and random canvases,
``canvas_logits`` of the fp32 engine, the bf16 engine, the bf16 engine with ``int8`` and with ``fp8`` experts, and
the fp32 engine with ``int8`` experts. ``rel(a, b) = mean|a - b| / mean|a|`` over all canvas logits; top-1
agreement is the fraction of positions whose argmax is the same. ``tests/test_quantize.py`` bounds the same
quantities (quantized within 1.0x (int8) / 1.5x (fp8) of the bf16 distance).

    python -m benchmarks.quantize_tolerance --out benchmarks/results/quantize_tolerance.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from benchmarks._fixtures import print_report


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().mean() / a.abs().mean()).item()


def top1(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.argmax(-1) == b.argmax(-1)).float().mean().item()


def precision_logits(path: str) -> dict[str, torch.Tensor]:
    """Canvas logits of the same prompts and canvases through the engine at each precision: ``fp32``, ``bf16``,
    ``int8`` and ``fp8`` (bf16 engine, quantized experts) and ``int8_fp32`` (fp32 engine, int8 experts).
    ``tests/test_quantize.py`` bounds these same tensors."""
    from engine import DiffusionEngine

    fp32 = DiffusionEngine.from_pretrained(path, dtype="float32")
    g = torch.Generator().manual_seed(1)
    vocab, window = fp32.config.vocab_size, fp32.config.sliding_window
    prompts = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (3, window - 1, 2 * window + 5)]
    canvas = torch.randint(0, vocab, (3, fp32.canvas_length), generator=g)
    out = {"fp32": fp32.canvas_logits(prompts, canvas)}
    out["bf16"] = DiffusionEngine.from_pretrained(path, dtype="bfloat16").canvas_logits(prompts, canvas).float()
    for kind in ("int8", "fp8"):
        q = DiffusionEngine.from_pretrained(path, dtype="bfloat16", quantization=kind)
        out[kind] = q.canvas_logits(prompts, canvas).float()
    int8_fp32 = DiffusionEngine.from_pretrained(path, dtype="float32", quantization="int8")
    out["int8_fp32"] = int8_fp32.canvas_logits(prompts, canvas)
    return out


def measure(path: str) -> dict:
    logits = precision_logits(path)
    exact, bf16 = logits["fp32"], logits["bf16"]
    row = {"bf16_vs_fp32": round(rel(exact, bf16), 3), "bf16_vs_fp32_top1": round(top1(exact, bf16), 3)}
    for kind in ("int8", "fp8"):
        row[f"{kind}_vs_bf16"] = round(rel(bf16, logits[kind]), 3)
        row[f"{kind}_vs_bf16_top1"] = round(top1(bf16, logits[kind]), 3)
    row["int8_fp32_vs_fp32"] = round(rel(exact, logits["int8_fp32"]), 3)
    return row


def run(names: list[str]) -> dict:
    from benchmarks.checkpoints import make_tiny_checkpoint

    torch.set_num_threads(1)
    results = []
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            make_tiny_checkpoint(tmp, name, embed_std=0.15)
            results.append({"checkpoint": name, **measure(tmp)})
    return {"benchmark": "quantize_tolerance", "device": "cpu", "embed_std": 0.15, "results": results}


def main(argv=None):
    from benchmarks.checkpoints import CONFIGS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", nargs="+", default=sorted(CONFIGS), choices=sorted(CONFIGS))
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args(argv)
    print_report(run(args.checkpoints), args.out)


if __name__ == "__main__":
    main()
