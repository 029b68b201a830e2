"""Peak host memory of one denoising canvas against batch size, and how many fp32 ``[B, canvas, vocab]``
tensors that peak amounts to.

Each batch size runs in a fresh subprocess: load the engine, warm up at batch 1, then generate one canvas
(fixed steps) and read the process's peak resident memory (``VmHWM``, reset just before) against its
resident memory at that moment. With a large vocabulary the logits dominate, so ``peak_over_logits`` near 1 means one such tensor
alive per step (plus chunk-sized temporaries); a naive sampler sits at 3-6.

    python -m benchmarks.engine_memory --batch 1 8 32 --vocab 131072

``--mixed`` measures continuous batching instead: 1 long prompt among 31 short ones (``--long-prompt`` tokens),
``--inflight`` rows at a time, each generating several canvases, so rows are admitted and finish all through the
call. ``--compare-root DIR`` runs the same measurement, in the same run, on the engine of another checkout (e.g.
the commit before a change, ``git worktree add /tmp/before <commit>``) and prints both:

    python -m benchmarks.engine_memory --mixed --compare-root /tmp/before
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


def _reset_peak() -> None:
    """Linux: writing 5 to clear_refs resets the peak resident set (VmHWM) to the current one."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def child(path: str, batch: int, steps: int) -> dict:
    import torch

    from engine import DiffusionEngine, SamplingParams

    torch.set_num_threads(2)
    engine = DiffusionEngine.from_pretrained(path, dtype=torch.float32)
    c, v = engine.canvas_length, engine.config.vocab_size
    params = SamplingParams(max_new_tokens=c, max_denoising_steps=steps, fixed_steps=True, ignore_eos=True)
    engine.generate_ids([[5, 6, 7]], params)  # warm-up: allocator, kernels, first-use buffers
    prompts = [[5 + i, 6, 7, 8] for i in range(batch)]
    _reset_peak()
    before = _status_bytes("VmRSS")
    engine.generate_ids(prompts, params)
    peak = _status_bytes("VmHWM")
    logits = batch * c * v * 4
    return {"batch": batch, "canvas": c, "vocab": v, "logits_bytes": logits, "peak_delta_bytes": peak - before,
            "peak_over_logits": round((peak - before) / logits, 3)}


def child_mixed(path: str, long_prompt: int, inflight: int, steps: int) -> dict:
    import torch

    from engine import DiffusionEngine, SamplingParams

    torch.set_num_threads(2)
    engine = DiffusionEngine.from_pretrained(path, dtype=torch.float32)
    c = engine.canvas_length
    params = SamplingParams(max_new_tokens=4 * c, max_denoising_steps=steps, fixed_steps=True, ignore_eos=True)
    engine.generate_ids([[5, 6, 7]], params)  # warm-up
    prompts = [[5 + (i % 50)] * (long_prompt if i == 0 else 8 + i) for i in range(32)]
    cfg = engine.config
    per_token = sum(2 * l.num_kv_heads * l.head_dim * 4 for l in cfg.layers)  # fp32 K and V bytes per slot
    _reset_peak()
    before = _status_bytes("VmRSS")
    engine.generate_ids(prompts, params, max_inflight=inflight)
    peak = _status_bytes("VmHWM")
    capacity = long_prompt + 4 * c
    return {"rows": 32, "long_prompt_tokens": long_prompt, "max_inflight": inflight, "canvases_per_row": 4,
            "kv_bytes_per_token": per_token, "one_cache_bytes": inflight * capacity * per_token,
            "peak_delta_bytes": peak - before, "peak_over_one_cache": round((peak - before) / (inflight * capacity
                                                                                               * per_token), 3)}


def measure_mixed(roots: dict[str, str], long_prompt: int, inflight: int, steps: int) -> dict:
    """The mixed case for the engine of each checkout in ``roots`` (label -> directory), one subprocess each."""
    from benchmarks.checkpoints import make_tiny_checkpoint

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        make_tiny_checkpoint(tmp, "base", vocab_size=512, with_tokenizer=False)
        for label, root in roots.items():
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20), "PYTHONPATH": root}
            res = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child-mixed", tmp,
                                  "--long-prompt", str(long_prompt), "--inflight", str(inflight), "--steps",
                                  str(steps)], capture_output=True, text=True, check=True, cwd=root, env=env)
            out[label] = {"engine_root": root, **json.loads(res.stdout.strip().splitlines()[-1])}
    return out


def measure(batches: list[int], vocab: int = 131072, steps: int = 2, name: str = "base") -> list[dict]:
    from benchmarks.checkpoints import make_tiny_checkpoint

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        make_tiny_checkpoint(tmp, name, vocab_size=vocab, with_tokenizer=False)
        for b in batches:
            # glibc: serve every allocation over 1 MiB from its own mapping, returned on free, so the resident
            # set tracks the live tensors instead of heap arenas that keep freed memory (which made runs vary)
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
            out = subprocess.run([sys.executable, "-m", "benchmarks.engine_memory", "--child", tmp, "--batch", str(b),
                                  "--steps", str(steps)], capture_output=True, text=True, check=True,
                                 cwd=Path(__file__).resolve().parents[1], env=env)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--vocab", type=int, default=131072, help="vocabulary of the tiny checkpoint")
    ap.add_argument("--steps", type=int, default=2, help="denoising passes in the measured canvas")
    ap.add_argument("--mixed", action="store_true", help="continuous batching: 1 long prompt among 31 short")
    ap.add_argument("--long-prompt", type=int, default=3000, help="tokens of the long prompt (--mixed)")
    ap.add_argument("--inflight", type=int, default=8, help="max_inflight (--mixed)")
    ap.add_argument("--compare-root", help="also measure the engine of this checkout (--mixed), same run")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-mixed", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_mixed:
        print(json.dumps(child_mixed(args.child_mixed, args.long_prompt, args.inflight, args.steps)))
        return
    if args.mixed:
        roots = {"this checkout": str(Path(__file__).resolve().parents[1])}
        if args.compare_root:
            roots = {"compare": str(Path(args.compare_root).resolve()), **roots}
        text = json.dumps({"benchmark": "engine_memory_mixed", "config": "tiny 'base' (hidden 64, 4 layers, vocab "
                           "512), canvas 16, fp32, CPU", "results": measure_mixed(roots, args.long_prompt,
                                                                                  args.inflight, args.steps)},
                          indent=2)
        print(text)
        if args.out:
            args.out.write_text(text + "\n")
        return
    if args.child:
        print(json.dumps(child(args.child, args.batch[0], args.steps)))
        return
    text = json.dumps({"benchmark": "engine_memory", "vocab": args.vocab, "steps": args.steps,
                       "config": "tiny 'base' (hidden 64, 4 layers), canvas 16, fp32, CPU",
                       "results": measure(args.batch, args.vocab, args.steps)}, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
