"""redraft's engine against transformers' reference ``generate``, same prompts and sampler settings, fp32 on CPU.

Every side gets one untimed warm-up call and then exactly ``--repeats`` timed calls, in this one process, on the
same rows; tokens/s come from the median call (the minimum is reported too). It reports and never asserts.

* ``fixed``: a tiny random checkpoint (``benchmarks.checkpoints`` config ``bench``: hidden 128, 6 layers, 8 experts top-2,
  canvas 32, ``--vocab``), a fixed number of denoising passes per canvas, EOS ignored: identical work in both, so
  the ratio is the per-pass speed of the implementation. Every row has the same prompt (a real Python file).
* ``adaptive``: the trained demo model shipped in the repo (``configs/models/code-tiny``), the reference sampler
  defaults (48 passes at most, stable-and-confident stop, EOS ends a row), a different prompt per row (lines of a
  Python file). Rows really end at different canvases and canvases stop before the pass budget; the report
  gives, per engine, the tokens before EOS, the mean canvases per row and the passes: redraft's mean passes per
  row (a finished row leaves the batch), the reference's decoder calls (each over the whole batch, which runs
  until its last row is done).

    python -m benchmarks.engine_vs_reference --batch 1 8 --mode both --out benchmarks/results/engine_vs_reference.json
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import torch

from benchmarks._fixtures import timed

REPO = Path(__file__).resolve().parents[1]
TRAINED = REPO / "configs" / "models" / "code-tiny"


def _reference_cuts(sequences: torch.Tensor, prompt_len: int, eos: list[int]) -> list[int]:
    """Per row, the generated tokens before the first EOS."""
    cuts = []
    for row in sequences[:, prompt_len:].tolist():
        cuts.append(next((i for i, t in enumerate(row) if t in eos), len(row)))
    return cuts


def reference_generate(ref, ids: torch.Tensor, new_tokens: int, params, adaptive: bool, eos_ids: list[int]):
    """transformers' ``generate`` with redraft's sampler settings; ``adaptive`` False: no early stop, EOS
    ignored (fixed work per canvas). Returns the sequences (prompt + generated)."""
    with torch.no_grad():
        return ref.generate(
            ids, max_new_tokens=new_tokens, max_denoising_steps=params.max_denoising_steps,
            t_min=params.t_min, t_max=params.t_max, stability_threshold=params.stability_threshold,
            confidence_threshold=params.confidence_threshold if adaptive else 1e-9,
            eos_token_id=eos_ids if adaptive else None).sequences


def _prompts(engine, mode: str, batch: int, prompt_tokens: int) -> list[list[int]]:
    """Fixed mode: one real document, the same for every row. Adaptive: per row the last ``prompt_tokens``
    tokens of a Python file up to the end of a different line (the reference takes one rectangular tensor)."""
    source = Path(json.__file__).read_text()
    if mode == "fixed":
        return [engine.tokenizer.encode(source)[:prompt_tokens]] * batch
    lines = source.splitlines()
    return [engine.tokenizer.encode("\n".join(lines[:60 + 9 * i]) + "\n")[-prompt_tokens:] for i in range(batch)]


def _measure(engine, ref, mode: str, batch: int, params, new_tokens: int, prompt_tokens: int, repeats: int) -> dict:
    prompts = _prompts(engine, mode, batch, prompt_tokens)
    ours_t, ours = timed(lambda: engine.generate_ids(prompts, params, seeds=list(range(batch))), repeats)
    ids = torch.tensor(prompts)
    calls = [0]
    hook = ref.model.decoder.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))

    def reference():
        torch.manual_seed(0)
        calls[0] = 0
        return reference_generate(ref, ids, new_tokens, params, mode == "adaptive", engine.eos_ids)

    ref_t, seq = timed(reference, repeats)
    hook.remove()
    c = engine.canvas_length
    cuts = _reference_cuts(seq, ids.shape[1], engine.eos_ids) if mode == "adaptive" else [new_tokens] * batch
    ours_tokens, ref_tokens = sum(len(r.token_ids) for r in ours), sum(cuts)
    ours_rate, ref_rate = ours_tokens / ours_t["median_seconds"], ref_tokens / ref_t["median_seconds"]
    return {"batch": batch, "ratio": round(ours_rate / ref_rate, 2),
            "redraft": {"tokens": ours_tokens, "tok_s": round(ours_rate, 1), **ours_t,
                        "mean_passes_per_row": round(sum(r.num_passes for r in ours) / batch, 1),
                        "mean_canvases_per_row": round(sum(r.num_canvases for r in ours) / batch, 2),
                        "rows_ended_at_eos": sum(r.finish_reason == "eos" for r in ours)},
            "transformers": {"tokens": ref_tokens, "tok_s": round(ref_rate, 1), **ref_t,
                             "decoder_calls_for_the_batch": calls[0],
                             "mean_canvases_per_row": round(sum(min(math.ceil((n + 1) / c), math.ceil(
                                 new_tokens / c)) for n in cuts) / batch, 2),
                             "rows_ended_at_eos": sum(n < new_tokens for n in cuts) if mode == "adaptive" else 0}}


def run(batches, steps: int, new_tokens: int, repeats: int, prompt_tokens: int, mode: str = "fixed",
        vocab: int = 512, threads: int = 1) -> dict:
    from transformers import DiffusionGemmaForBlockDiffusion

    from engine import DiffusionEngine, SamplingParams
    from benchmarks.checkpoints import make_tiny_checkpoint

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        if mode == "adaptive":
            path, model = TRAINED, "configs/models/code-tiny (trained)"
            params = SamplingParams(max_new_tokens=new_tokens)  # reference defaults
        else:
            path, model = tmp, f"bench (random), vocab {vocab}"
            make_tiny_checkpoint(tmp, "bench", vocab_size=vocab)
            params = SamplingParams(max_new_tokens=new_tokens, max_denoising_steps=steps, fixed_steps=True,
                                    ignore_eos=True)
        engine = DiffusionEngine.from_pretrained(path, dtype=torch.float32)
        ref = DiffusionGemmaForBlockDiffusion.from_pretrained(path, dtype=torch.float32).eval()
    results = [_measure(engine, ref, mode, b, params, new_tokens, prompt_tokens, repeats) for b in batches]
    return {"benchmark": "engine_vs_reference", "mode": mode, "model": model, "dtype": "float32", "device": "cpu",
            "threads": torch.get_num_threads(), "warmup_calls": 1, "repeats": repeats,
            "max_denoising_steps": params.max_denoising_steps, "fixed_steps": params.fixed_steps,
            "new_tokens": new_tokens, "prompt_tokens": prompt_tokens, "results": results}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--steps", type=int, default=16, help="fixed mode: denoising passes per canvas")
    ap.add_argument("--new-tokens", type=int, default=64, help="tokens per row at most (canvas 32: 2 canvases)")
    ap.add_argument("--prompt-tokens", type=int, default=64, help="prompt length (a Python source file)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per engine and batch (the same for both)")
    ap.add_argument("--mode", choices=["fixed", "adaptive", "both"], default="both")
    ap.add_argument("--vocab", type=int, default=512, help="fixed mode: vocabulary of the random checkpoint")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args(argv)
    modes = ["fixed", "adaptive"] if args.mode == "both" else [args.mode]
    out = [run(args.batch, args.steps, args.new_tokens, args.repeats, args.prompt_tokens, m, args.vocab, args.threads)
           for m in modes]
    text = json.dumps(out if len(out) > 1 else out[0], indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
