"""The cost of batch-invariant rows (``engine.batch_invariant``): tokens/s with the setting off and on, side by
side in one process run, on the same rows, with the same warm-up and the same number of timed calls per side.

Stated config: the ``bench`` checkpoint of ``benchmarks/checkpoints.py`` (hidden 128, 6 layers, 8 experts top-2,
canvas 32) with a 512-token vocabulary, fp32 on the CPU with ``--threads`` torch threads (default 1), a 32-token
prompt, 32 new tokens with 16 fixed denoising passes per canvas and EOS ignored (identical work on both sides).
Off and on alternate call by call, so a change in the machine's load hits both. Also reports, for the same rows,
whether the text of each row alone equals its text in the batch (the property the setting buys). Reports, never
asserts.

    python -m benchmarks.batch_invariance --out benchmarks/results/batch_invariance.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._fixtures import print_report


def measure(batches: list[int], repeats: int, threads: int, vocab: int) -> dict:
    from benchmarks.checkpoints import make_tiny_checkpoint
    from engine import DiffusionEngine, SamplingParams

    torch.set_num_threads(threads)
    params = SamplingParams(max_new_tokens=32, max_denoising_steps=16, fixed_steps=True, ignore_eos=True)
    results, load_before = [], os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        make_tiny_checkpoint(tmp, "bench", vocab_size=vocab)
        engine = DiffusionEngine.from_pretrained(tmp, dtype=torch.float32)
        for b in batches:
            gen = torch.Generator().manual_seed(b)
            prompts = [torch.randint(3, vocab, (8 + 8 * (i % 4),), generator=gen).tolist() for i in range(b)]
            seeds = list(range(b))
            times = {False: [], True: []}
            texts = {}
            for flag in (False, True):  # warm-up, one call per side
                engine.batch_invariant = flag
                engine.generate_ids(prompts, params, seeds=seeds)
            for _ in range(repeats):
                for flag in (False, True):
                    engine.batch_invariant = flag
                    t = time.perf_counter()
                    out = engine.generate_ids(prompts, params, seeds=seeds)
                    times[flag].append(time.perf_counter() - t)
                    texts[flag] = [o.token_ids for o in out]
            row = {"batch": b}
            for flag, name in ((False, "off"), (True, "on")):
                engine.batch_invariant = flag
                alone = [engine.generate_ids([p], params, seeds=[s])[0].token_ids for p, s in zip(prompts, seeds)]
                median = statistics.median(times[flag])
                row[name] = {"calls": repeats, "median_seconds": round(median, 4),
                             "min_seconds": round(min(times[flag]), 4), "tok_s": round(b * 32 / median, 1),
                             "rows_equal_alone": sum(a == t for a, t in zip(alone, texts[flag]))}
            row["on_over_off"] = round(row["on"]["tok_s"] / row["off"]["tok_s"], 2)
            results.append(row)
    return {"benchmark": "batch_invariance", "device": "cpu", "threads": threads, "dtype": "float32",
            "config": {"name": "bench", "vocab": vocab, "canvas": 32, "steps": 16, "new_tokens": 32},
            "repeats": repeats, "warmup_calls": 1,
            "load_average": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
            "results": results}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32], help="batch sizes (default 1 8 32)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per side and batch (default 3)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--vocab", type=int, default=512, help="vocabulary size (default 512)")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.repeats < 1 or min(args.batch) < 1:
        ap.error("--repeats and --batch must be at least 1")
    print_report(measure(args.batch, args.repeats, args.threads, args.vocab), args.out)


if __name__ == "__main__":
    main()
