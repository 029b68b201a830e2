"""Step-level continuous batching against static batching, same rows, same seeds, one run.

Static batching cuts the rows into batches of ``--inflight`` and runs them one after another: each batch
shrinks as its rows finish and the next batch starts only when its slowest row is done. Continuous batching
(``generate_ids(..., max_inflight=N)``) keeps N canvases in flight and admits a queued row the moment one
finishes. Both produce the same text for every row (checked here); what differs is how full each decoder pass
is. The rows come from a checkpoint whose EOS is likelier (rows end at different canvases, as real rows do)
and prompts of different lengths cut from a real document.

Reported per mode: wall seconds, generated tokens per second, decoder passes (calls), mean canvases per pass
(occupancy of the ``--inflight`` places). On a GPU a pass costs about the same at any batch below the
compute-bound size, so the pass count is what sets wall time there; on this CPU a pass costs about in
proportion to its rows, so wall time changes less than the pass count.

    python -m benchmarks.continuous_batching --rows 48 --inflight 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from benchmarks._fixtures import timed


def run(rows: int, inflight: int, new_tokens: int, vocab: int, config: str, eos_scale: float,
        max_steps: int, confidence: float, threads: int = 1, repeats: int = 3) -> dict:
    from engine import DiffusionEngine, SamplingParams
    from benchmarks.checkpoints import make_tiny_checkpoint

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        make_tiny_checkpoint(tmp, config, vocab_size=vocab, embed_std=4.0, eos_scale=eos_scale)
        engine = DiffusionEngine.from_pretrained(tmp, dtype=torch.float32)
    source = engine.tokenizer.encode(Path(json.__file__).read_text())
    prompts = [source[i * 7:i * 7 + 16 + (i * 37) % 96] for i in range(rows)]
    seeds = list(range(rows))
    params = SamplingParams(max_new_tokens=new_tokens, max_denoising_steps=max_steps,
                            confidence_threshold=confidence)

    def measure(batches: list[list[int]], max_inflight: int | None) -> tuple[dict, list]:
        sizes: list[int] = []

        def call():
            sizes.clear()
            results = [None] * rows
            for batch in batches:
                out = engine.generate_ids([prompts[i] for i in batch], params, seeds=[seeds[i] for i in batch],
                                          on_pass=lambda r, _: sizes.append(len(r)), max_inflight=max_inflight)
                for i, r in zip(batch, out):
                    results[i] = r
            return results

        timing, results = timed(call, repeats, warmup=0)  # one warm-up call below serves both modes
        wall = timing["median_seconds"]
        tokens = sum(len(r.token_ids) for r in results)
        return {"wall_s": wall, **timing, "tokens": tokens, "tokens_per_s": round(tokens / wall, 1),
                "decoder_passes": len(sizes), "canvas_passes": sum(sizes),
                "mean_canvases_per_pass": round(sum(sizes) / len(sizes), 2),
                "occupancy": round(sum(sizes) / (len(sizes) * inflight), 3)}, results

    engine.generate_ids(prompts[:2], params, seeds=seeds[:2])  # warm-up
    static, static_rows = measure([list(range(s, min(s + inflight, rows))) for s in range(0, rows, inflight)], None)
    continuous, cont_rows = measure([list(range(rows))], inflight)
    same = all(a.token_ids == b.token_ids for a, b in zip(static_rows, cont_rows))
    canvases = [r.num_canvases for r in cont_rows]
    return {
        "config": {"model": config, "vocab": vocab, "rows": rows, "inflight": inflight, "max_new_tokens": new_tokens,
                   "canvas_length": engine.canvas_length, "max_denoising_steps": max_steps,
                   "confidence_threshold": confidence, "eos_scale": eos_scale,
                   "canvases_per_row": {"min": min(canvases), "max": max(canvases),
                                        "mean": round(sum(canvases) / rows, 2)},
                   "device": "cpu", "threads": torch.get_num_threads(), "warmup_calls": 1, "repeats": repeats},
        "static": static, "continuous": continuous, "identical_outputs": same,
        "ratio": {"passes_static_over_continuous": round(static["decoder_passes"] / continuous["decoder_passes"], 2),
                  "tokens_per_s_continuous_over_static": round(continuous["tokens_per_s"] / static["tokens_per_s"], 2)},
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=48, help="rows to generate")
    ap.add_argument("--inflight", type=int, default=8, help="canvases per decoder pass (both modes)")
    ap.add_argument("--new-tokens", type=int, default=96, help="max_new_tokens per row")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--config", default="base", help="tiny config name from benchmarks.checkpoints.CONFIGS")
    ap.add_argument("--eos-scale", type=float, default=2.0, help="EOS embedding scale (rows end at varied canvases)")
    ap.add_argument("--max-steps", type=int, default=16, help="max_denoising_steps")
    ap.add_argument("--confidence", type=float, default=2.5,
                    help="confidence_threshold (random weights are never confident: raise it so canvases stop early)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each mode (the same for both)")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    result = run(args.rows, args.inflight, args.new_tokens, args.vocab, args.config, args.eos_scale, args.max_steps,
                 args.confidence, args.threads, args.repeats)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
