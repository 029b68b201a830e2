"""redraft's engine against transformers' reference ``generate`` on the same tiny checkpoint.

Same prompts, same canvas count, same number of denoising passes per canvas (fixed: no early stop in either,
EOS ignored), fp32 on CPU. Prints JSON: tokens/s of each and the ratio at each batch size.

    python -m benchmarks.engine_vs_reference --batch 1 8 --steps 16 --new-tokens 64 --prompt-tokens 256
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


def run(batches, steps: int, new_tokens: int, repeats: int, prompt_tokens: int, config: str = "bench") -> dict:
    from engine import DiffusionEngine, SamplingParams
    from tests.checkpoints import make_tiny_checkpoint

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        ref = make_tiny_checkpoint(tmp, config)
        engine = DiffusionEngine.from_pretrained(tmp, dtype=torch.float32)
    # a real document as the prompt (bulk rewriting prompts are documents, not one-liners)
    source = Path(json.__file__).read_text()
    base_ids = engine.tokenizer.encode(source)[:prompt_tokens]
    params = SamplingParams(max_new_tokens=new_tokens, max_denoising_steps=steps, fixed_steps=True, ignore_eos=True)
    results = []
    for b in batches:
        prompts = [base_ids for _ in range(b)]
        ours_s = _time(lambda: engine.generate_ids(prompts, params, seeds=list(range(b))), repeats)
        ids = torch.tensor(prompts)

        def reference():
            with torch.no_grad():
                ref.generate(ids, max_new_tokens=new_tokens, max_denoising_steps=steps, t_min=params.t_min,
                             t_max=params.t_max, stability_threshold=1, confidence_threshold=1e-9,
                             eos_token_id=None)

        ref_s = _time(reference, repeats)
        tokens = b * new_tokens
        results.append({"batch": b, "tokens": tokens, "ours_tok_s": round(tokens / ours_s, 1),
                        "reference_tok_s": round(tokens / ref_s, 1), "ratio": round(ref_s / ours_s, 2)})
    return {"benchmark": "engine_vs_reference", "config": config, "dtype": "float32", "device": "cpu",
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
    args = ap.parse_args(argv)
    print(json.dumps(run(args.batch, args.steps, args.new_tokens, args.repeats, args.prompt_tokens), indent=2))


if __name__ == "__main__":
    main()
