"""The two backends of ``redraft run`` on the same rows: redraft's diffusion engine and vLLM.

Both models are tiny random checkpoints written here in the real on-disk format: a DiffusionGemma
(``benchmarks.checkpoints`` config ``bench``: hidden 128, 6 layers, 8 experts top-2, canvas 32) for redraft, a Llama
(hidden 128, 6 layers, 4 heads of 32) for vLLM, with the same tokenizer, so every prompt is the same token ids
for both. Every row generates exactly ``--new-tokens`` tokens (EOS ignored; redraft runs ``--steps`` denoising
passes per canvas), fp32 on CPU. Two measurements, both in every run, on the same rows:

* ``job``: ``redraft run`` end to end on a local Ray (read, engine actor start and model load, generation,
  staging, part files, summary) with ``engine.backend`` redraft and vllm; figures from the job's summary and rows;
* ``engine``: the engines alone, one untimed warm-up call each, then exactly ``--repeats`` timed calls each (all
  rows in one call; median and minimum reported, tokens/s from the median): ``DiffusionEngine.generate_ids``
  against ``vllm.LLM.generate`` on the same token ids.

Reported per backend: tokens per second, forward passes per generated token (redraft: denoising passes over a
canvas; vLLM: one decode pass per token), wall seconds; and the ratios redraft / vllm. The engine measurement
also gives positions per token: the sequence positions a model evaluates for each token it keeps (redraft: every
pass runs the whole canvas; vLLM: one position per decode pass), which is what a compute-bound machine pays for. Needs an environment with
both vLLM and transformers >= 5.19 (the ``vllm`` extra brings 5.19)::

    python -m benchmarks.backend_compare --rows 32 --new-tokens 64 --steps 16 --out bench_backends.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from benchmarks._fixtures import make_tiny_llama_checkpoint, timed, write_jsonl

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def corpus_rows(n: int, chars: int = 160) -> list[dict]:
    """``n`` prompts cut from real text (Python standard library sources)."""
    from benchmarks.checkpoints import training_text

    text = "".join(training_text(max_chars=n * chars * 2))
    return [{"id": f"row-{i}", "text": text[i * chars:(i + 1) * chars]} for i in range(n)]


def run_jobs(ckpts: dict, src: Path, out_root: Path, args) -> dict:
    """``redraft run`` once per backend; tokens/s from the job's own summary, passes per token from its rows."""
    import pyarrow.dataset as pads

    from pipelines.config import validate_config
    from pipelines.run import run_job

    results = {}
    for backend, ckpt in ckpts.items():
        engine = {"backend": backend, "checkpoint": str(ckpt), "device": "cpu", "dtype": "float32"}
        if backend == "vllm":
            engine["vllm"] = {"max_model_len": 1024, "cpu_kv_cache_gib": 1}
        cfg = validate_config({
            "input": {"path": str(src), "id_column": "id"},
            "output": {"path": str(out_root / backend), "rows_per_file": args.rows},
            "engine": engine,
            "sampling": {"max_new_tokens": args.new_tokens, "max_denoising_steps": args.steps, "fixed_steps": True,
                         "ignore_eos": True},
            "workers": {"batch_size": args.rows, "concurrency": 1, "num_cpus": args.threads},
            "job": {"name": f"bench-{backend}", "max_error_fraction": 0.0},
        })
        result = run_job(cfg)
        if result.exit_code != 0:
            raise RuntimeError(f"{backend} job failed: {result.message}")
        rows = pads.dataset(str(out_root / backend), format="parquet", exclude_invalid_files=True).to_table(
            columns=["num_output_tokens", "num_passes"]).to_pylist()
        tokens = sum(r["num_output_tokens"] for r in rows)
        s = result.summary
        results[backend] = {"rows": s["rows_ok"], "output_tokens": s["output_tokens"],
                            "tokens_per_second": round(s["tokens_per_second"], 2),
                            "tokens_per_second_engine": s.get("tokens_per_second_engine"),
                            "passes_per_token": round(sum(r["num_passes"] for r in rows) / tokens, 3),
                            "wall_seconds": round(s["wall_seconds"], 2)}
    return results


def run_engines(ckpts: dict, prompts: list[list[int]], args) -> dict:
    """Both engines alone, warm, all rows in one call."""
    import torch

    from engine import DiffusionEngine, SamplingParams

    torch.set_num_threads(args.threads)
    engine = DiffusionEngine.from_pretrained(ckpts["redraft"], device="cpu", dtype=torch.float32)
    params = SamplingParams(max_new_tokens=args.new_tokens, max_denoising_steps=args.steps, fixed_steps=True,
                            ignore_eos=True, seed=0)
    timing, res = timed(lambda: engine.generate_ids(prompts, params), args.repeats)
    tokens = sum(len(r.token_ids) for r in res)
    passes_per_token = sum(r.num_passes for r in res) / tokens
    out = {"redraft": {"output_tokens": tokens, "tokens_per_second": round(tokens / timing["median_seconds"], 2),
                       "passes_per_token": round(passes_per_token, 3),
                       "positions_per_token": round(passes_per_token * engine.canvas_length, 2),
                       "wall_seconds": timing["median_seconds"], **timing}}
    del engine

    from vllm import LLM
    from vllm import SamplingParams as VSamplingParams
    from vllm.inputs import TokensPrompt

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # else vLLM reserves 92% of the machine's memory
    llm = LLM(model=str(ckpts["vllm"]), dtype="float32", max_model_len=1024, enforce_eager=True, seed=0)
    vparams = VSamplingParams(max_tokens=args.new_tokens, ignore_eos=True, temperature=0.0)
    requests = [TokensPrompt(prompt_token_ids=p) for p in prompts]
    timing, res = timed(lambda: llm.generate(requests, vparams, use_tqdm=False), args.repeats)
    tokens = sum(len(r.outputs[0].token_ids) for r in res)
    out["vllm"] = {"output_tokens": tokens, "tokens_per_second": round(tokens / timing["median_seconds"], 2),
                   "passes_per_token": 1.0, "positions_per_token": 1.0, "wall_seconds": timing["median_seconds"],
                   **timing}
    del llm
    return out


def ratios(pair: dict) -> dict:
    r, v = pair["redraft"], pair["vllm"]
    return {"tokens_per_second_redraft_over_vllm": round(r["tokens_per_second"] / v["tokens_per_second"], 3),
            "passes_per_token_redraft_over_vllm": round(r["passes_per_token"] / v["passes_per_token"], 3),
            "wall_seconds_redraft_over_vllm": round(r["wall_seconds"] / v["wall_seconds"], 3)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--steps", type=int, default=16, help="redraft: denoising passes per canvas (fixed)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (and Ray CPUs) per engine")
    ap.add_argument("--repeats", type=int, default=3, help="timed engine calls per backend (the same for both)")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args(argv)

    from benchmarks.checkpoints import make_tiny_checkpoint
    from engine.tokenizer import Tokenizer

    with tempfile.TemporaryDirectory(prefix="redraft-backends-") as tmp:
        tmp = Path(tmp)
        ckpts = {"redraft": tmp / "tiny-diffusiongemma", "vllm": tmp / "tiny-llama"}
        make_tiny_checkpoint(ckpts["redraft"], "bench")
        make_tiny_llama_checkpoint(ckpts["vllm"], hidden_size=128, num_layers=6, max_positions=1024)
        rows = corpus_rows(args.rows)
        src = write_jsonl(tmp / "rows.jsonl", rows)
        tok = Tokenizer(ckpts["redraft"])
        prompts = [tok.encode(r["text"]) for r in rows]
        report = {
            "machine": f"{os.cpu_count()} CPUs, fp32",
            "settings": {"rows": args.rows, "new_tokens": args.new_tokens, "redraft_steps_per_canvas": args.steps,
                         "canvas": 32, "mean_prompt_tokens": round(sum(map(len, prompts)) / len(prompts), 1),
                         "threads": args.threads, "repeats": args.repeats},
        }
        report["engine"] = run_engines(ckpts, prompts, args)
        report["engine"]["ratios"] = ratios(report["engine"])
        report["job"] = run_jobs(ckpts, src, tmp / "out", args)
        report["job"]["ratios"] = ratios(report["job"])
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
