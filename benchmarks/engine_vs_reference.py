"""redraft's engine against transformers' reference ``generate`` on the same tiny checkpoint.

Two modes, same prompts and sampler settings for both engines, fp32 on CPU; prints JSON with tokens/s of
each and the ratio at each batch size:

* ``fixed``: a fixed number of denoising passes per canvas, EOS ignored: identical work in both, so the ratio
  is the per-pass speed of the implementation;
* ``adaptive``: the reference sampler defaults (48 passes at most, stable-and-confident stop, EOS ends a row)
  on a checkpoint whose rows end at different canvases (EOS made likelier). Tokens are the generated tokens
  before EOS. Here redraft's per-row early exit (a finished row leaves the batch) shows.

    python -m benchmarks.engine_vs_reference --batch 1 8 --mode both
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _reference_tokens(sequences: torch.Tensor, prompt_len: int, eos: list[int]) -> int:
    total = 0
    for row in sequences[:, prompt_len:].tolist():
        cut = next((i for i, t in enumerate(row) if t in eos), len(row))
        total += cut
    return total


def reference_generate(ref, ids: torch.Tensor, new_tokens: int, params, adaptive: bool, eos_ids: list[int]):
    """transformers' ``generate`` with redraft's sampler settings; ``adaptive`` False: no early stop, EOS
    ignored (fixed work per canvas). Returns the sequences (prompt + generated)."""
    with torch.no_grad():
        return ref.generate(
            ids, max_new_tokens=new_tokens, max_denoising_steps=params.max_denoising_steps,
            t_min=params.t_min, t_max=params.t_max, stability_threshold=params.stability_threshold,
            confidence_threshold=params.confidence_threshold if adaptive else 1e-9,
            eos_token_id=eos_ids if adaptive else None).sequences


def run(batches, steps: int, new_tokens: int, repeats: int, prompt_tokens: int, mode: str = "fixed",
        vocab: int = 32768, config: str = "bench") -> dict:
    from engine import DiffusionEngine, SamplingParams
    from benchmarks.checkpoints import make_tiny_checkpoint

    torch.set_num_threads(2)
    adaptive = mode == "adaptive"
    with tempfile.TemporaryDirectory() as tmp:
        ref = make_tiny_checkpoint(tmp, config, vocab_size=vocab,
                                   **({"embed_std": 4.0, "eos_scale": 1.0} if adaptive else {}))
        engine = DiffusionEngine.from_pretrained(tmp, dtype=torch.float32)
    # a real document as the prompt (bulk rewriting prompts are documents, not one-liners)
    source = Path(json.__file__).read_text()
    base_ids = engine.tokenizer.encode(source)[:prompt_tokens]
    if adaptive:
        params = SamplingParams(max_new_tokens=new_tokens)  # reference defaults
    else:
        params = SamplingParams(max_new_tokens=new_tokens, max_denoising_steps=steps, fixed_steps=True,
                                ignore_eos=True)
    results = []
    for b in batches:
        prompts = [base_ids for _ in range(b)]
        ours_out = {}

        def ours():
            ours_out["r"] = engine.generate_ids(prompts, params, seeds=list(range(b)))

        ours_s = _time(ours, repeats)
        ours_tokens = sum(len(r.token_ids) for r in ours_out["r"])
        ids = torch.tensor(prompts)
        ref_out = {}

        def reference():
            torch.manual_seed(0)
            ref_out["seq"] = reference_generate(ref, ids, new_tokens, params, adaptive, engine.eos_ids)

        ref_s = _time(reference, repeats)
        ref_tokens = _reference_tokens(ref_out["seq"], ids.shape[1], engine.eos_ids) if adaptive else b * new_tokens
        ours_rate, ref_rate = ours_tokens / ours_s, ref_tokens / ref_s
        results.append({"batch": b, "ours_tokens": ours_tokens, "reference_tokens": ref_tokens,
                        "ours_tok_s": round(ours_rate, 1), "reference_tok_s": round(ref_rate, 1),
                        "ratio": round(ours_rate / ref_rate, 2),
                        "ours_passes_per_row": round(sum(r.num_passes for r in ours_out["r"]) / b, 1)})
    return {"benchmark": "engine_vs_reference", "mode": mode, "config": config, "vocab": vocab, "dtype": "float32",
            "device": "cpu",
            "threads": torch.get_num_threads(), "denoising_steps": steps, "new_tokens": new_tokens,
            "prompt_tokens": len(base_ids),
            "results": results}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--steps", type=int, default=16, help="denoising passes per canvas (fixed)")
    ap.add_argument("--new-tokens", type=int, default=64, help="tokens per row (canvas 32: 2 canvases)")
    ap.add_argument("--prompt-tokens", type=int, default=256, help="prompt length (a Python source file)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per setting; the best is kept")
    ap.add_argument("--mode", choices=["fixed", "adaptive", "both"], default="both")
    ap.add_argument("--vocab", type=int, default=32768,
                    help="vocabulary of the tiny checkpoint (DiffusionGemma's is 262144)")
    args = ap.parse_args(argv)
    modes = ["fixed", "adaptive"] if args.mode == "both" else [args.mode]
    out = [run(args.batch, args.steps, args.new_tokens, args.repeats, args.prompt_tokens, m, args.vocab)
           for m in modes]
    print(json.dumps(out if len(out) > 1 else out[0], indent=2))


if __name__ == "__main__":
    main()
