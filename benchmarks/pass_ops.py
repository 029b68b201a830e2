"""Work per denoising pass as a GPU sees it: aten ops launched per pass and host synchronisations per pass,
against batch size, on a tiny random checkpoint (counted, not timed: the figures are the same on any machine).

Ops per pass: the ops of one extra fixed pass per canvas (two calls that differ by one pass, subtracted), split
into the per-row random draws (each row owns a ``torch.Generator``: one draw for the candidates, one for the
noise) and everything else. Host syncs: the aten ops that read device memory on the host (``_local_scalar_dense``
behind ``.item()`` / ``bool()`` / ``int()``, ``nonzero``, ``masked_select``, boolean-mask indexing) plus every
``Tensor.tolist()`` / ``Tensor.item()`` call, over a whole generate call with the adaptive stop, per decoder pass.

    python -m benchmarks.pass_ops --batch 1 4 32 --out benchmarks/results/pass_ops.json
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_OPS = {"aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.item"}
RANDOM_OPS = {"aten.rand", "aten.randint", "aten.uniform_", "aten.random_"}
_INDEX_OPS = {"aten.index", "aten.index_put_", "aten.index_put"}


class OpCounter(TorchDispatchMode):
    """Counts aten ops by name (``ops``) and host syncs by kind (``syncs``) while active; ``Tensor.tolist`` and
    ``Tensor.item`` are counted by wrapping them (``tolist`` does not go through the dispatcher)."""

    def __init__(self):
        super().__init__()
        self.ops: collections.Counter = collections.Counter()
        self.syncs: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        self.ops[name] += 1
        if name in SYNC_OPS:
            self.syncs[name] += 1
        elif name in _INDEX_OPS and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                                        for i in (args[1] or ())):
            self.syncs[f"{name} (bool mask)"] += 1
        return func(*args, **(kwargs or {}))

    @contextmanager
    def counting(self):
        """Count inside the block (ops and the wrapped ``tolist`` / ``item`` calls)."""
        originals = {m: getattr(torch.Tensor, m) for m in ("tolist", "item")}

        def wrap(method):
            def wrapped(tensor, *a, **k):
                self.syncs[f"Tensor.{method}"] += 1
                return originals[method](tensor, *a, **k)
            return wrapped

        for m in originals:
            setattr(torch.Tensor, m, wrap(m))
        try:
            with self:
                yield self
        finally:
            for m, f in originals.items():
                setattr(torch.Tensor, m, f)


def prompts(batch: int, same_length: bool = False) -> list[list[int]]:
    """Token-id prompts; rows of different lengths add attention masks (a constant per pass), so the op counts
    use rows of one length."""
    return [[5 + i % 7] * (6 if same_length else 3 + (i * 5) % 11) for i in range(batch)]


def ops_per_pass(engine, batch: int, known: list[int] | None = None) -> dict:
    """Aten ops of one extra fixed pass per canvas: ``{"other": n, "random_draws": n, "by_op": {...}}``."""
    from engine import SamplingParams

    rows, runs = prompts(batch, same_length=True), []
    for steps in (4, 5):
        params = SamplingParams(max_new_tokens=16, max_denoising_steps=steps, fixed_steps=True, ignore_eos=True)
        counter = OpCounter()
        with counter.counting():
            if known is None:
                engine.generate_ids(rows, params, seeds=list(range(batch)))
            else:
                engine.denoise_canvases(rows, [known] * batch, params, seeds=list(range(batch)))
        runs.append(counter.ops)
    diff = collections.Counter(runs[1])
    diff.subtract(runs[0])
    random = sum(n for name, n in diff.items() if name in RANDOM_OPS)
    return {"other": sum(diff.values()) - random, "random_draws": random,
            "by_op": {k: v for k, v in sorted(diff.items()) if v}}


def syncs_per_pass(engine, batch: int, fixed: bool) -> dict:
    """Host syncs over one generate call (several canvases; adaptive stop unless ``fixed``) per decoder pass."""
    from engine import SamplingParams

    params = SamplingParams(max_new_tokens=40, max_denoising_steps=12, fixed_steps=fixed, stability_threshold=0,
                            confidence_threshold=3.0, seed=3)
    passes, counter = [], OpCounter()
    with counter.counting():
        engine.generate_ids(prompts(batch), params, seeds=list(range(batch)), on_pass=lambda r, a: passes.append(1))
    total = sum(counter.syncs.values())
    return {"decoder_passes": len(passes), "host_syncs": total, "per_pass": round(total / len(passes), 3),
            "by_kind": dict(counter.syncs)}


def run(batches: list[int], config: str, vocab: int) -> dict:
    from engine import FREE, DiffusionEngine
    from benchmarks.checkpoints import make_tiny_checkpoint

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        make_tiny_checkpoint(tmp, config, vocab_size=vocab, embed_std=4.0)
        engine = DiffusionEngine.from_pretrained(tmp, dtype=torch.float32)
    c = engine.canvas_length
    known = [FREE] * (c // 2) + [30, 31] + [FREE] * (c // 2 - 2)
    results = []
    for b in batches:
        results.append({"batch": b, "ops_per_pass": ops_per_pass(engine, b),
                        "ops_per_pass_clamped": ops_per_pass(engine, b, known),
                        "syncs_adaptive": syncs_per_pass(engine, b, fixed=False),
                        "syncs_fixed": syncs_per_pass(engine, b, fixed=True)})
    return {"benchmark": "pass_ops", "config": config, "vocab": vocab, "canvas": c, "device": "cpu",
            "results": results}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4, 32])
    ap.add_argument("--config", default="bench", help="tiny config name from benchmarks.checkpoints.CONFIGS")
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args(argv)
    report = run(args.batch, args.config, args.vocab)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
