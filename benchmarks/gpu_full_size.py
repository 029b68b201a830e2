"""The full-size DiffusionGemma text model (25.2B parameters, 3.8B active) with random weights on one GPU:
tokens/s at batch 1, 8 and 32 against its two physical limits (README.md, 'Full size on one GPU').

No checkpoint is read: the model is built on the meta device from the published config (``FULL_SIZE``, the
``text_config`` of google/diffusiongemma-26B-A4B-it), materialised on the device in the run dtype and filled
with small random normal values there. Each row generates one 256-token canvas with 16 fixed denoising passes
(``SamplingParams(fixed_steps=True, ignore_eos=True)``) through the engine's own ``generate_ids``, after a
short prompt (its prefill is the 17th pass over the weights, as a commit would be).

Printed (JSON, also written to ``--out``), per batch size: tokens/s, decoder passes per token, peak memory
(GPU: most allocated, weights included; CPU: peak resident set), model FLOP/s; and

* at batch 1, the **memory-bound limit**: every pass reads every weight once (a 256-token canvas routes to
  nearly all 128 experts), so ``limit = tokens / (passes * weight_bytes / bandwidth)``, with the bandwidth
  measured here by a large device-to-device copy (bytes read + written per second). Target: >= 70%.
* at batch 32, the **fraction of bf16 peak FLOP/s**: matmul FLOPs of the run (every projection of every
  position, top-K experts, the output head, the self-conditioning embedding and MLP, attention scores over the
  keys each query sees) per second, over the device's dense bf16 peak (``PEAK_BF16_TFLOPS``; on a device not
  in the table, the rate of a large bf16 matmul measured here). Target: >= 35%.

Each batch size runs a 2-pass warm-up and the timed call (17 weight passes); at full size the whole run should
take well under a minute of device time after start-up (estimated, not yet measured: at batch 32 a pass is
about 75 TFLOP), and ``--budget-s`` skips batch sizes that would not finish in time.
``--small`` runs a scaled-down config on the CPU in seconds (the tests do); ``--memory-table`` prints the
full-size weight memory at each precision without building anything.

    python -m benchmarks.gpu_full_size                       # bf16 on the GPU
    python -m benchmarks.gpu_full_size --quantization fp8    # FP8 experts (Hopper)
    python -m benchmarks.gpu_full_size --small               # CPU, seconds
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks._fixtures import print_report
from engine.config import DiffusionGemmaConfig
from engine.quantize import QUANTIZATIONS, parameter_counts, quantize_model, tensor_bytes, weight_bytes

_LAYER_TYPES = (["sliding_attention"] * 5 + ["full_attention"]) * 5
FULL_SIZE = {  # config.json of google/diffusiongemma-26B-A4B-it (text model; the vision tower is not built)
    "model_type": "diffusion_gemma", "canvas_length": 256, "tie_word_embeddings": True,
    "text_config": {
        "vocab_size": 262144, "hidden_size": 2816, "intermediate_size": 2112, "num_hidden_layers": 30,
        "num_attention_heads": 16, "num_key_value_heads": 8, "num_global_key_value_heads": 2, "head_dim": 256,
        "global_head_dim": 512, "sliding_window": 1024, "num_experts": 128, "top_k_experts": 8,
        "moe_intermediate_size": 704, "final_logit_softcapping": 30.0, "max_position_embeddings": 131072,
        "layer_types": _LAYER_TYPES,
    },
}
SMALL = {  # the same shape of model, scaled down to run on 2 CPU cores in seconds
    "model_type": "diffusion_gemma", "canvas_length": 32, "tie_word_embeddings": True,
    "text_config": {
        "vocab_size": 4096, "hidden_size": 128, "intermediate_size": 96, "num_hidden_layers": 6,
        "num_attention_heads": 4, "num_key_value_heads": 2, "num_global_key_value_heads": 1, "head_dim": 32,
        "global_head_dim": 64, "sliding_window": 64, "num_experts": 16, "top_k_experts": 4,
        "moe_intermediate_size": 32, "max_position_embeddings": 4096,
    },
}
# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, by a substring of torch.cuda.get_device_name();
# the first match wins (the SXM H100 reports itself as "NVIDIA H100 80GB HBM3").
PEAK_BF16_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H200", 989.0), ("H100", 989.0)]
TARGETS = {"memory_bound_fraction_batch1": 0.70, "peak_flops_fraction_batch32": 0.35}


def build_config(spec: dict) -> DiffusionGemmaConfig:
    """Parse a config.json-style dict exactly as a checkpoint's would be."""
    return DiffusionGemmaConfig.from_dict(spec, name="diffusiongemma-random")


def random_model(cfg: DiffusionGemmaConfig, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """``DiffusionGemmaModel`` with random weights created on ``device`` (nothing on the host): built and
    on the meta device (q/k/v and gate/up already fused), materialised uninitialised, then filled in place. Matrices get
    ``N(0, 1/fan_in)`` (activations keep their scale through the layers), norms and scalars 1."""
    from engine.models.diffusion_gemma import DiffusionGemmaModel

    with torch.device("meta"):
        model = DiffusionGemmaModel(cfg)
    model = model.to(dtype).to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1 or p.numel() == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, p.shape[-1] ** -0.5, generator=gen)
    model.reset_rope(device)
    return model.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: torch.device, nbytes: int) -> float:
    """Bytes per second of a device-to-device copy of ``nbytes`` (each byte read once and written once)."""
    src = torch.ones(nbytes // 2, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(device)
    repeats = 10
    t = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    _sync(device)
    return 2 * nbytes * repeats / (time.perf_counter() - t)


def peak_flops(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """The device's dense bf16 peak from the table, else the measured rate of a large matmul in ``dtype``."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in PEAK_BF16_TFLOPS:
            if key in name:
                return tflops * 1e12, f"table: {key} dense bf16"
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    _sync(device)
    repeats = 5
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t), f"measured: {n}x{n} {str(dtype).split('.')[-1]} matmul"


def _attention_flops(cfg: DiffusionGemmaConfig, queries: int, keys_before: int, keys_own: int) -> float:
    """Scores and weighted sum (2 matmuls) for ``queries`` positions seeing the cached keys in their window and
    ``keys_own`` keys of their own block."""
    total = 0.0
    for spec in cfg.layers:
        cached = min(keys_before, cfg.sliding_window - 1) if spec.is_sliding else keys_before
        total += 2 * 2 * cfg.num_attention_heads * spec.head_dim * queries * (cached + keys_own)
    return total


def run_flops(cfg: DiffusionGemmaConfig, batch: int, prompt_len: int, steps: int) -> float:
    """Matmul FLOPs of generating one canvas per row: the prompt's causal prefill (no output head; the causal
    mask halves its scores) and ``steps`` bidirectional decoder passes over the canvas, each with the output
    head, and from the second pass on the self-conditioning embedding (probabilities @ E) and MLP."""
    counts = parameter_counts(cfg)
    c, d, v = cfg.canvas_length, cfg.hidden_size, cfg.vocab_size
    body = counts["active"] - counts["embedding"] - counts["self_conditioning"] - counts["norms"] - counts["lm_head"]
    prefill = 2 * body * prompt_len + _attention_flops(cfg, prompt_len, 0, prompt_len) / 2
    head = 2 * v * d
    self_cond = 2 * v * d + 2 * 3 * d * cfg.intermediate_size
    per_pass = (2 * body + head) * c + _attention_flops(cfg, c, prompt_len, c)
    return batch * (prefill + steps * per_pass + (steps - 1) * self_cond * c)


def _sig(x: float) -> float:
    """Four significant digits (CPU and GPU figures differ by orders of magnitude)."""
    return float(f"{x:.4g}")


def _peak_memory_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        from benchmarks.engine_memory import _reset_peak

        _reset_peak()


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    from benchmarks.engine_memory import _status_bytes

    return _status_bytes("VmHWM")


def measure(spec: dict, batches: list[int], steps: int, prompt_len: int, device: torch.device,
            dtype: torch.dtype, quantization: str = "none", budget_s: float = 240.0, copy_bytes: int = 2 << 30,
            seed: int = 0) -> dict:
    """Build the random model from ``spec`` and time one canvas per row at each batch size (see module doc)."""
    from engine import DiffusionEngine, SamplingParams

    started = time.perf_counter()
    cfg = build_config(spec)
    bandwidth = copy_bandwidth(device, copy_bytes)  # before the model, while memory is free
    peak, peak_source = peak_flops(device, dtype)
    model = random_model(cfg, device, dtype, seed)
    quantize_model(model, quantization, device)
    weights = tensor_bytes(model)
    engine = DiffusionEngine(model, None, "diffusiongemma-random")
    c = cfg.canvas_length
    params = SamplingParams(max_new_tokens=c, max_denoising_steps=steps, fixed_steps=True, ignore_eos=True)
    warm = SamplingParams(max_new_tokens=c, max_denoising_steps=2, fixed_steps=True, ignore_eos=True)
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(3, cfg.vocab_size, (prompt_len,), generator=gen).tolist()
    passes_per_canvas = steps + 1  # the prefill reads the weights once more
    results, last = [], None
    for b in batches:
        elapsed = time.perf_counter() - started
        if last is not None and elapsed + 1.5 * last[1] * b / last[0] > budget_s:
            results.append({"batch": b, "skipped": f"would pass --budget-s {budget_s:.0f} (at {elapsed:.0f} s)"})
            continue
        prompts = [prompt] * b
        engine.generate_ids(prompts, warm, seeds=list(range(b)))  # kernels, allocator, first-use buffers
        _sync(device)
        _peak_memory_reset(device)
        t = time.perf_counter()
        out = engine.generate_ids(prompts, params, seeds=list(range(b)))
        _sync(device)
        seconds = time.perf_counter() - t
        last = (b, seconds)
        tokens = sum(len(r.token_ids) for r in out)
        flops = run_flops(cfg, b, prompt_len, steps)
        row = {"batch": b, "tokens": tokens, "seconds": round(seconds, 4), "tok_s": round(tokens / seconds, 1),
               "passes_per_token": round(sum(r.num_passes for r in out) / tokens, 4),
               "peak_memory_gib": round(_peak_memory(device) / 2**30, 2),
               "model_tflop_s": _sig(flops / seconds / 1e12), "peak_flops_fraction": _sig(flops / seconds / peak)}
        if b == 1:
            limit = tokens / (passes_per_canvas * weights / bandwidth)
            row.update(memory_bound_tok_s=round(limit, 1), memory_bound_fraction=_sig(tokens / seconds / limit))
        results.append(row)
    counts = parameter_counts(cfg)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        "benchmark": "gpu_full_size", "device": device_name, "dtype": str(dtype).split(".")[-1],
        "quantization": quantization, "torch": torch.__version__,
        "config": {"hidden": cfg.hidden_size, "layers": cfg.num_hidden_layers, "experts": cfg.num_experts,
                   "top_k": cfg.top_k_experts, "expert_width": cfg.moe_intermediate_size, "vocab": cfg.vocab_size,
                   "canvas": c, "params_total": counts["total"], "params_active": counts["active"]},
        "steps": steps, "prompt_tokens": prompt_len, "passes_per_canvas": passes_per_canvas,
        "weight_bytes": weights, "copy_bandwidth_gb_s": round(bandwidth / 1e9, 1),
        "peak_tflop_s": _sig(peak / 1e12), "peak_source": peak_source, "targets": TARGETS,
        "results": results, "wall_seconds": round(time.perf_counter() - started, 1),
    }


def memory_table(spec: dict = FULL_SIZE) -> dict:
    """Weight memory of the full-size text model at each precision (experts quantized, the rest bf16)."""
    cfg = build_config(spec)
    counts = parameter_counts(cfg)
    return {"params_total": counts["total"], "params_active": counts["active"], "params_experts": counts["experts"],
            "weight_gb": {q if q != "none" else "bf16": round(weight_bytes(cfg, q) / 1e9, 2) for q in QUANTIZATIONS}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", help="batch sizes (default 1 8 32; --small: 1 2 4)")
    ap.add_argument("--steps", type=int, default=16, help="fixed denoising passes per canvas")
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--quantization", choices=QUANTIZATIONS, default="none")
    ap.add_argument("--device", default="auto", help="auto: cuda when available, else cpu")
    ap.add_argument("--budget-s", type=float, default=240.0, help="skip batch sizes that would end after this")
    ap.add_argument("--small", action="store_true", help="the scaled-down config, fp32 on the CPU")
    ap.add_argument("--memory-table", action="store_true", help="print full-size weight memory and exit")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.memory_table:
        print_report(memory_table(), args.out)
        return
    if args.small:
        device = torch.device("cpu")
    elif args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cpu" and not args.small:
        ap.error(f"the full-size model needs a GPU ({weight_bytes(build_config(FULL_SIZE)) / 1e9:.1f} GB of bf16 "
                 "weights) and none is available; --small runs the scaled-down model on the CPU")
    if device.type == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    batches = args.batch or ([1, 2, 4] if args.small else [1, 8, 32])
    result = measure(SMALL if args.small else FULL_SIZE, batches, args.steps, args.prompt_tokens, device, dtype,
                     args.quantization, args.budget_s, copy_bytes=(2 << 30) if device.type == "cuda" else (64 << 20))
    print_report(result, args.out)


if __name__ == "__main__":
    main()
