"""Throughput against batch size: redraft's engine and transformers' reference ``generate`` on the same tiny
checkpoint with the same settings, tokens/s, passes per token and peak memory at each batch size.

Stated config: the ``bench`` checkpoint of ``benchmarks/checkpoints.py`` (hidden 128, 6 layers, 8 experts top-2, canvas
32) with a ``--vocab`` vocabulary, fp32 on the CPU with ``--threads`` torch threads (default 1); every row gets
the same real prompt (the first ``--prompt-tokens`` tokens of a Python source file) and generates
``--new-tokens`` tokens with ``--steps`` fixed denoising passes per canvas and EOS ignored, so both engines do
the same work.

Each (engine, batch size) runs in a fresh child process (the ``engine_memory`` method): load, one warm-up call
at that batch size, exactly ``--repeats`` timed calls (the same count for every side and batch size; median and
minimum reported, ``tok_s`` from the median), then one more call during which the process's peak resident memory
(``VmHWM``, reset just before, large allocations on their own mappings) is read against its resident memory at
the start: ``peak_memory_mib`` is what the call added. It reports and never asserts: a ratio below 1 is a
figure, not a failure.
Prints JSON (also written to ``--out``.json) and plots tokens/s and peak memory against batch size
(``--out``.png, matplotlib from the dev extra).

    python -m benchmarks.throughput                 # batch 1 2 4 8 16 32 64
    python -m benchmarks.throughput --quick         # batch 1 2, 2 passes: seconds (the tests run this)
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.engine_memory import _reset_peak, _status_bytes
from benchmarks.engine_vs_reference import reference_generate

REPO = Path(__file__).resolve().parents[1]
ENGINES = ("redraft", "transformers")


def _prompt(tokenizer_path: str, n: int) -> list[int]:
    from engine.tokenizer import Tokenizer

    return Tokenizer(Path(tokenizer_path)).encode(Path(json.__file__).read_text())[:n]


def child(path: str, which: str, batch: int, steps: int, new_tokens: int, prompt_tokens: int,
          quantization: str, repeats: int = 5, threads: int = 1) -> dict:
    """One measurement in this (fresh) process: one warm-up call, exactly ``repeats`` timed calls (the same
    count for every engine and batch size, so neither side gets more tries at its minimum), then one more call
    for peak memory; returns its JSON row with the median and the minimum call time."""
    from engine import DiffusionEngine, SamplingParams

    torch.set_num_threads(threads)
    params = SamplingParams(max_new_tokens=new_tokens, max_denoising_steps=steps, fixed_steps=True, ignore_eos=True)
    prompts = [_prompt(path, prompt_tokens)] * batch
    if which == "redraft":
        engine = DiffusionEngine.from_pretrained(path, dtype=torch.float32, quantization=quantization)

        def call():
            out = engine.generate_ids(prompts, params, seeds=list(range(batch)))
            return sum(len(r.token_ids) for r in out), sum(r.num_passes for r in out)
    else:
        from transformers import DiffusionGemmaForBlockDiffusion

        ref = DiffusionGemmaForBlockDiffusion.from_pretrained(path, dtype=torch.float32).eval()
        ids = torch.tensor(prompts)
        canvases = -(-new_tokens // ref.config.canvas_length)

        def call():
            torch.manual_seed(0)
            reference_generate(ref, ids, new_tokens, params, adaptive=False, eos_ids=[])
            return batch * new_tokens, batch * canvases * steps

    call()  # warm-up at this batch size: allocator, kernels, first-use buffers
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        tokens, passes = call()
        times.append(time.perf_counter() - t)
    _mmap_large_allocations()
    _reset_peak()
    before = _status_bytes("VmRSS")
    call()
    peak = _status_bytes("VmHWM") - before
    median = statistics.median(times)
    return {"tokens": tokens, "calls": repeats, "median_seconds": round(median, 4),
            "min_seconds": round(min(times), 4), "tok_s": round(tokens / median, 1),
            "tok_s_best": round(tokens / min(times), 1),
            "passes_per_token": round(passes / tokens, 4), "peak_memory_mib": round(peak / 2**20, 1)}


def _mmap_large_allocations() -> None:
    """glibc: hand the freed heap back, then serve every allocation over 1 MiB from its own mapping, returned on
    free, so the peak resident set follows live tensors. Set only after the timed calls: a fresh mapping per
    large tensor costs page faults (3-4x slower at batch 64 here), which the ``engine_memory`` benchmark's
    environment variable would put into the timings too."""
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc_trim(0)
    libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD


def _run_child(path: str, which: str, batch: int, args) -> dict:
    """One measurement in a fresh process; a run over ``--timeout-s`` is reported as skipped, not waited for."""
    cmd = [sys.executable, "-m", "benchmarks.throughput", "--child", path, "--engine", which, "--batch", str(batch),
           "--steps", str(args.steps), "--new-tokens", str(args.new_tokens), "--prompt-tokens",
           str(args.prompt_tokens), "--quantization", args.quantization, "--repeats", str(args.repeats),
           "--threads", str(args.threads)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=args.timeout_s)
    except subprocess.TimeoutExpired:
        return {"skipped": f"warm-up and timed call took over --timeout-s {args.timeout_s:.0f} s"}
    if out.returncode:
        raise RuntimeError(f"{which} at batch {batch} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(args) -> dict:
    from benchmarks.checkpoints import CONFIGS, make_tiny_checkpoint

    results, load_before = [], os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        make_tiny_checkpoint(tmp, "bench", vocab_size=args.vocab)
        for b in args.batch:
            row = {"batch": b, **{which: _run_child(tmp, which, b, args) for which in ENGINES}}
            ours, ref = row["redraft"].get("tok_s"), row["transformers"].get("tok_s")
            row["ratio"] = round(ours / ref, 2) if ours and ref else None
            print(f"batch {b}: redraft {ours} tok/s, transformers {ref} tok/s, ratio {row['ratio']}", file=sys.stderr)
            results.append(row)
    text = CONFIGS["bench"]["text"]
    return {"benchmark": "throughput", "device": "cpu", "threads": args.threads, "dtype": "float32",
            "config": {"name": "bench", "hidden": text["hidden_size"], "layers": text["num_hidden_layers"],
                       "experts": text["num_experts"], "top_k": text["top_k_experts"],
                       "canvas": CONFIGS["bench"]["canvas_length"], "vocab": args.vocab},
            "quantization": args.quantization, "repeats": args.repeats, "warmup_calls": 1,
            "steps": args.steps, "new_tokens": args.new_tokens,
            "prompt_tokens": args.prompt_tokens,
            # the machine may be shared: its 1-minute load average before and after, to read the figures by
            "load_average": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
            "results": results}


def plot(report: dict, path: Path) -> None:
    """Tokens/s and peak memory against batch size, both engines, log-2 batch axis (memory on log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = [r["batch"] for r in report["results"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for which in ENGINES:
        done = [r for r in report["results"] if "tok_s" in r[which]]
        ax1.plot([r["batch"] for r in done], [r[which]["tok_s"] for r in done], marker="o", label=which)
        ax2.plot([r["batch"] for r in done], [r[which]["peak_memory_mib"] for r in done], marker="o", label=which)
    for ax, label in ((ax1, "tokens / s"), (ax2, "peak memory added by the call (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    ax2.set_yscale("log", base=2)  # log-log: memory linear in the batch is a line of slope 1
    cfg = report["config"]
    fig.suptitle(f"tiny '{cfg['name']}' (hidden {cfg['hidden']}, {cfg['layers']} layers, vocab {cfg['vocab']}), "
                 f"{report['steps']} fixed passes per canvas, fp32, {report['threads']} CPU thread(s), median of {report['repeats']} calls")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--steps", type=int, default=8, help="fixed denoising passes per canvas")
    ap.add_argument("--new-tokens", type=int, default=32, help="tokens per row (canvas 32: one canvas)")
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=8192, help="vocabulary of the tiny checkpoint")
    ap.add_argument("--quantization", choices=["none", "int8", "fp8"], default="none",
                    help="redraft's expert weights (the reference always runs fp32)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="timed calls per measurement, the same for both engines at every batch size")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads in each measurement")
    ap.add_argument("--timeout-s", type=float, default=600.0, help="per measurement (one engine, one batch)")
    ap.add_argument("--quick", action="store_true", help="batch 1 2, 2 passes, 16-token prompt, vocab 1024")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "throughput",
                    help="writes OUT.json and OUT.png")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.engine, args.batch[0], args.steps, args.new_tokens,
                               args.prompt_tokens, args.quantization, args.repeats, args.threads)))
        return
    if args.quick:
        args.batch, args.steps, args.prompt_tokens, args.vocab = [1, 2], 2, 16, 1024
        args.repeats = 1
    report = measure(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2)
    args.out.with_suffix(".json").write_text(text + "\n")
    plot(report, args.out.with_suffix(".png"))
    print(text)


if __name__ == "__main__":
    main()
