"""Everything to check on a GPU, in one call that ends in under 8 minutes (``--budget-s``, default 450 s): one
JSON report, printed and written to ``--out``.

(a) ``parity``: redraft's engine in bf16 against transformers' DiffusionGemma on a tiny random checkpoint
    (``benchmarks.checkpoints`` config ``base``, embedding std 0.15, as ``tests/test_engine_parity.py``): the
    reference in fp32 on the CPU (exact) and in bf16 on the device, each row alone. Reported: max and mean
    abs logit difference, argmax agreement, and whether the bf16 tolerance of the parity tests holds (argmax
    agreement > 0.75, mean abs difference < 0.1 x mean abs logit).
(b) ``cuda_graph``: ``torch.cuda.CUDAGraph`` captured around one denoising pass (``model.decode`` on a fixed KV
    cache and canvas, ``decode_pass``) and replayed; replay time against the eager pass, and the largest
    difference between the replayed and the eager output. ``graph_vs_eager`` takes any zero-argument pass, so
    it can be pointed at a compiled pass as well. A capture that fails is reported with its error.
(c) ``throughput``: the full-size model (``benchmarks.gpu_full_size``) in bf16 and with fp8 experts at batch
    1, 8 and 32, each next to the memory-bound limit (batch 1) and the bf16 peak FLOP/s (the design reference notes,
    section 3), with the achieved fraction of each beside its target (>= 70% at batch 1, >= 35% at batch
    32). Targets are reported, never asserted.

Without CUDA (or with ``--small``) it runs in seconds on the CPU: (a) in bf16 on the CPU, (b) and the full-size
(c) reported as ``{"skipped": "no CUDA device"}``, and (c)'s code path run on ``gpu_full_size.SMALL`` (2 passes,
batch 1 and 2) so that it is exercised (``tests/test_benchmarks.py`` runs it).

    python -m benchmarks.gpu_check --out benchmarks/results/gpu_check.json   # on a CUDA machine
    python -m benchmarks.gpu_check --small                                   # CPU, seconds
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import gpu_full_size
from benchmarks._fixtures import print_report

NO_CUDA = {"skipped": "no CUDA device"}
BF16_TOLERANCE = {"argmax_agreement_above": 0.75, "mean_abs_diff_below_fraction_of_mean_abs": 0.1}


def _inputs(vocab: int, canvas_len: int, lengths: list[int], seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]
    return prompts, torch.randint(0, vocab, (len(lengths), canvas_len), generator=g)


def _compare(ours: torch.Tensor, ref: torch.Tensor) -> dict:
    diff = (ours - ref).abs()
    agree = (ours.argmax(-1) == ref.argmax(-1)).float().mean().item()
    mean_fraction = diff.mean().item() / ref.abs().mean().item()
    return {"max_abs_diff": round(diff.max().item(), 4), "mean_abs_diff": round(diff.mean().item(), 4),
            "mean_abs_diff_fraction": round(mean_fraction, 4), "argmax_agreement": round(agree, 4),
            "within_tolerance": agree > BF16_TOLERANCE["argmax_agreement_above"]
            and mean_fraction < BF16_TOLERANCE["mean_abs_diff_below_fraction_of_mean_abs"]}


def _reference_logits(ref, prompts, canvas, device, dtype) -> torch.Tensor:
    ref = ref.to(device=device, dtype=dtype)
    with torch.no_grad():
        rows = [ref(input_ids=torch.tensor([p], device=device), decoder_input_ids=canvas[i:i + 1].to(device)).logits[0]
                for i, p in enumerate(prompts)]
    return torch.stack(rows).float().cpu()


def parity(device: torch.device, dtype: torch.dtype = torch.bfloat16) -> tuple[dict, object]:
    """(a): the engine in ``dtype`` on ``device`` against transformers; returns the report and the engine."""
    from benchmarks.checkpoints import make_tiny_checkpoint
    from engine import DiffusionEngine

    with tempfile.TemporaryDirectory() as tmp:
        ref = make_tiny_checkpoint(tmp, "base", embed_std=0.15)
        engine = DiffusionEngine.from_pretrained(tmp, device=str(device), dtype=dtype)
    # the rows of tests/test_engine_parity.py's bf16 test (one shorter, one longer than the sliding window)
    prompts, canvas = _inputs(engine.config.vocab_size, engine.canvas_length, [5, 11])
    ours = engine.canvas_logits(prompts, canvas.to(device)).float().cpu()
    exact = _reference_logits(ref, prompts, canvas, torch.device("cpu"), torch.float32)
    same_dtype = _reference_logits(ref, prompts, canvas, device, dtype)
    name = str(dtype).split(".")[-1]
    report = {"checkpoint": "base", "dtype": name, "rows": len(prompts), "tolerance": BF16_TOLERANCE,
              "vs_transformers_fp32_cpu": _compare(ours, exact),
              f"vs_transformers_{name}_{device.type}": _compare(ours, same_dtype)}
    return report, engine


def decode_pass(engine, batch: int):
    """One denoising pass on static inputs: ``batch`` prompts prefilled once into a fixed KV cache, a fixed
    canvas; each call runs ``model.decode`` over it (scratch slots only, the cache is never committed)."""
    prompts, canvas = _inputs(engine.config.vocab_size, engine.canvas_length, [7] * batch, seed=2)
    cache = engine._prefill(prompts, engine.canvas_length)
    canvas = canvas.to(engine.device)

    def step() -> torch.Tensor:
        with torch.no_grad():
            return engine.model.decode(canvas, cache)

    return step


def _time(fn, repeats: int) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / repeats


def graph_vs_eager(step, repeats: int = 20) -> dict:
    """(b): capture ``step`` (a zero-argument pass on static inputs) in a CUDA graph, replay it, and time the
    replay against eager calls (same number of timed calls each, after warm-up on a side stream)."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = step()
        graph.replay()
        expected = step()
        torch.cuda.synchronize()
        eager_s, replay_s = _time(step, repeats), _time(graph.replay, repeats)
    except Exception as e:  # a pass that cannot be captured yet (host syncs, dynamic shapes): say why
        return {"captured": False, "error": f"{type(e).__name__}: {e}"[:400]}
    return {"captured": True, "calls": repeats, "eager_ms": round(eager_s * 1e3, 3),
            "replay_ms": round(replay_s * 1e3, 3), "speedup": round(eager_s / replay_s, 2),
            "max_abs_diff_vs_eager": float((static_out.float() - expected.float()).abs().max())}


def summarise(run: dict) -> dict:
    """Achieved fraction of each limit beside its target: batch 1 against the memory-bound limit, the largest
    batch that ran against peak FLOP/s. Reported, never asserted."""
    rows = [r for r in run.get("results", []) if "tok_s" in r]
    out = {}
    first = next((r for r in rows if r["batch"] == 1), None)
    if first is not None:
        target = gpu_full_size.TARGETS["memory_bound_fraction_batch1"]
        out["memory_bound"] = {"batch": 1, "tok_s": first["tok_s"], "limit_tok_s": first["memory_bound_tok_s"],
                               "fraction": first["memory_bound_fraction"], "target": target,
                               "meets_target": first["memory_bound_fraction"] >= target}
    if rows:
        big, target = rows[-1], gpu_full_size.TARGETS["peak_flops_fraction_batch32"]
        out["peak_flops"] = {"batch": big["batch"], "tok_s": big["tok_s"], "model_tflop_s": big["model_tflop_s"],
                             "peak_tflop_s": run["peak_tflop_s"], "fraction": big["peak_flops_fraction"],
                             "target": target, "target_batch": 32, "meets_target": big["peak_flops_fraction"] >= target}
    return out


def throughput(spec: dict, batches: list[int], steps: int, device: torch.device, dtype: torch.dtype,
               deadline: float, copy_bytes: int) -> dict:
    """(c): ``gpu_full_size.measure`` in bf16 and with fp8 experts, each within what is left before
    ``deadline`` (``time.perf_counter()``); a precision that cannot start in time, or fails, says why."""
    out = {}
    for quantization in ("none", "fp8"):
        name = "bf16" if quantization == "none" else quantization
        left = deadline - time.perf_counter()
        if left < 60 and device.type == "cuda":
            out[name] = {"skipped": f"time budget: {left:.0f} s left"}
            continue
        try:
            run = gpu_full_size.measure(spec, batches, steps, 32 if device.type == "cuda" else 8, device, dtype,
                                        quantization, budget_s=max(left - 30, 1), copy_bytes=copy_bytes)
        except Exception as e:  # e.g. out of memory or no fp8 kernel: the rest of the report still comes back
            out[name] = {"error": f"{type(e).__name__}: {e}"[:400]}
        else:
            out[name] = {"summary": summarise(run), **run}
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def run_check(small: bool, budget_s: float = 450.0) -> dict:
    started = time.perf_counter()
    cuda = torch.cuda.is_available() and not small
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    report = {"benchmark": "gpu_check", "device": torch.cuda.get_device_name() if cuda else "cpu",
              "torch": torch.__version__, "budget_s": budget_s}
    report["parity"], engine = parity(device)
    step = decode_pass(engine, batch=4)
    if cuda:
        report["cuda_graph"] = {"pass": "model.decode", "checkpoint": "base", "batch": 4, **graph_vs_eager(step)}
    else:
        step()  # the static pass itself still runs, so its construction is exercised
        report["cuda_graph"] = dict(NO_CUDA)
    del engine, step
    deadline = started + budget_s
    if cuda:
        report["throughput"] = throughput(gpu_full_size.FULL_SIZE, [1, 8, 32], 16, device, torch.bfloat16,
                                          deadline, 2 << 30)
    else:
        report["throughput"] = {"full_size": dict(NO_CUDA), "small_cpu": throughput(
            gpu_full_size.SMALL, [1, 2], 2, device, torch.float32, deadline, 64 << 20)}
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    return report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="the CPU run (default when no CUDA device is present)")
    ap.add_argument("--budget-s", type=float, default=450.0, help="the whole run ends within about this")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.budget_s <= 0:
        ap.error(f"--budget-s must be positive, got {args.budget_s}")
    print_report(run_check(args.small, args.budget_s), args.out)


if __name__ == "__main__":
    main()
