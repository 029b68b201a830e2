"""The training loop: resumable, time-budgeted, with periodic validation and checkpoints.

Folder layout under ``out_dir``:

* ``tokenizer/``  the BPE trained on the train split (first run only);
* ``state/``      model + AdamW moments (safetensors) and ``meta.json`` (step, elapsed seconds, best validation
                  loss): written every ``checkpoint_seconds`` and at the end, atomically; a killed run resumes
                  from it and continues exactly where the schedule was;
* ``best/``       the Hugging Face checkpoint with the lowest validation loss so far (the one to ship);
* ``log.jsonl``   one line per validation.

Randomness is a function of (seed, step): step ``s`` draws its examples from ``random.Random(f"{seed}:{s}")``
and its noise from a generator seeded with ``(seed, s)``, so a resumed run trains on what an uninterrupted one
would have.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..tokenizer import Tokenizer
from .corpus import read_files
from .examples import Batch, ExampleMaker, LayoutSpec, collate, sample_examples
from .model_io import ModelSpec, build_model, export_checkpoint, trainable
from .objective import ObjectiveSpec, diffusion_loss
from .tokenizer_train import save_tokenizer, train_bpe


@dataclass(frozen=True)
class TrainSpec:
    out_dir: str
    corpus_root: str
    model: ModelSpec = field(default_factory=ModelSpec)
    layout: LayoutSpec | None = None  # default: from the model's canvas length
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    kind_weights: dict = field(default_factory=lambda: {"line": 0.5, "span": 0.2, "body": 0.1, "continue": 0.2})
    tokenizer_chars: int = 4_000_000
    batch_size: int = 32
    lr: float = 3e-3
    min_lr_fraction: float = 0.1
    weight_decay: float = 0.01
    warmup_steps: int = 200
    decay_fraction: float = 0.2  # the learning rate falls linearly over this last share of the budget
    max_steps: int = 1_000_000
    max_minutes: float = 60.0  # training time budget, summed over resumed runs
    checkpoint_seconds: float = 180.0
    eval_every: int = 200
    val_examples: int = 256
    seed: int = 0

    def layout_spec(self) -> LayoutSpec:
        return self.layout or LayoutSpec(canvas_length=self.model.canvas_length)


@dataclass
class StepInfo:
    step: int
    loss: float
    diffusion: float
    ar: float
    accuracy: float
    lr: float
    tokens_per_s: float
    elapsed_s: float
    val: dict | None = None


def _lr(spec: TrainSpec, step: int, frac: float) -> float:
    warm = min(1.0, (step + 1) / max(1, spec.warmup_steps))
    tail = min(1.0, max(0.0, (1.0 - frac) / spec.decay_fraction)) if spec.decay_fraction > 0 else 1.0
    return spec.lr * warm * (spec.min_lr_fraction + (1 - spec.min_lr_fraction) * tail)


class Trainer:
    """Train ``spec``; ``run()`` returns the final step info. Construct, then call ``run`` (it resumes)."""

    def __init__(self, spec: TrainSpec, log: Callable[[str], None] = print):
        self.spec, self.log = spec, log
        self.out = Path(spec.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(spec.seed)
        self.tok_dir = self.out / "tokenizer"
        if not (self.tok_dir / "tokenizer.json").is_file():
            texts = [f.text for f in read_files(spec.corpus_root, "train", spec.tokenizer_chars)]
            self.log(f"training a {spec.model.vocab_size}-token BPE on {sum(map(len, texts)):,} characters")
            save_tokenizer(train_bpe(texts, spec.model.vocab_size), self.tok_dir)
        self.tok = Tokenizer(self.tok_dir)
        if self.tok.vocab_size != spec.model.vocab_size:
            raise ValueError(f"{self.tok_dir}: the tokenizer has {self.tok.vocab_size} tokens, model.vocab_size is "
                             f"{spec.model.vocab_size}; use a new out_dir or the same vocabulary size")
        self.train_files = read_files(spec.corpus_root, "train")
        val_files = read_files(spec.corpus_root, "validation")
        if not self.train_files or not val_files:
            raise ValueError(f"{spec.corpus_root}: no .py files in the train or validation split")
        self.maker = ExampleMaker(self.tok, spec.layout_spec(), eos_id=1, pad_id=0)
        val = sample_examples(self.maker, val_files, spec.kind_weights, spec.val_examples,
                              random.Random(f"{spec.seed}:validation"))
        self.val_batches = [collate(val[i:i + spec.batch_size], 0) for i in range(0, len(val), spec.batch_size)]
        self.model = build_model(spec.model, spec.seed)
        self.opt = torch.optim.AdamW(trainable(self.model), lr=spec.lr, betas=(0.9, 0.98),
                                     weight_decay=spec.weight_decay)
        self.step, self.elapsed, self.best = 0, 0.0, math.inf
        self._resume()
        n_params = sum(p.numel() for p in self.model.parameters())
        self.log(f"model: {n_params / 1e6:.2f}M parameters; {len(self.train_files)} train files, "
                 f"{len(val_files)} validation files; step {self.step}, {self.elapsed / 60:.1f} of "
                 f"{spec.max_minutes:.0f} minutes done")

    # ------------------------------------------------------------------------------------------- state
    def _names(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def save_state(self) -> None:
        state = self.out / "state"
        tmp = self.out / "state.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file({n: p.detach().contiguous() for n, p in self.model.named_parameters()}, str(tmp / "model.safetensors"))
        moments = {}
        for n, p in self._names().items():
            st = self.opt.state.get(p)
            if st:
                moments[f"{n}::exp_avg"] = st["exp_avg"].contiguous()
                moments[f"{n}::exp_avg_sq"] = st["exp_avg_sq"].contiguous()
                moments[f"{n}::step"] = torch.as_tensor(st["step"], dtype=torch.float64).reshape(1)
        save_file(moments, str(tmp / "optimizer.safetensors"))
        meta = {"step": self.step, "elapsed_s": self.elapsed, "best_val": self.best,
                "spec": json.loads(json.dumps(asdict(self.spec), default=str))}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        shutil.rmtree(state, ignore_errors=True)
        tmp.rename(state)

    def _resume(self) -> None:
        state = self.out / "state"
        if not (state / "meta.json").is_file():
            return
        meta = json.loads((state / "meta.json").read_text())
        now = json.loads(json.dumps(asdict(self.spec.model), default=str))
        if meta["spec"]["model"] != now:
            changed = sorted(k for k in now if meta["spec"]["model"].get(k) != now[k])
            raise ValueError(f"{state}: saved with a different model shape ({', '.join(changed)}); use a new "
                             "out_dir or the saved shape")
        weights = load_file(str(state / "model.safetensors"))
        with torch.no_grad():
            for n, p in self.model.named_parameters():
                p.copy_(weights[n])
        moments = load_file(str(state / "optimizer.safetensors"))
        for n, p in self._names().items():
            if f"{n}::exp_avg" in moments:
                self.opt.state[p] = {"step": moments[f"{n}::step"].reshape(()).float(),
                                     "exp_avg": moments[f"{n}::exp_avg"], "exp_avg_sq": moments[f"{n}::exp_avg_sq"]}
        self.step, self.elapsed, self.best = meta["step"], meta["elapsed_s"], meta["best_val"]
        self.log(f"resumed from {state} at step {self.step}")

    # ------------------------------------------------------------------------------------------- steps
    def _batch(self, step: int) -> Batch:
        rng = random.Random(f"{self.spec.seed}:{step}")
        return collate(sample_examples(self.maker, self.train_files, self.spec.kind_weights, self.spec.batch_size,
                                       rng), 0)

    @torch.no_grad()
    def validate(self) -> dict:
        """Mean diffusion loss over the fixed validation examples at noise 0.5 (self-conditioned) and 1.0 (the
        first pass from pure noise), the argmax accuracy at 1.0, and the encoder's next-token loss."""
        self.model.eval()
        sums = {"loss_t05": 0.0, "loss_t10": 0.0, "acc_t10": 0.0, "ar": 0.0}
        for i, b in enumerate(self.val_batches):
            g = torch.Generator().manual_seed(10_000 + i)
            half = diffusion_loss(self.model, b, self.spec.objective, g, t_fixed=0.5, self_condition=True)
            full = diffusion_loss(self.model, b, self.spec.objective, g, t_fixed=1.0, self_condition=False)
            sums["loss_t05"] += half.diffusion
            sums["loss_t10"] += full.diffusion
            sums["acc_t10"] += full.accuracy
            sums["ar"] += full.ar
        self.model.train()
        out = {k: round(v / len(self.val_batches), 4) for k, v in sums.items()}
        out["loss"] = round((out["loss_t05"] + out["loss_t10"]) / 2, 4)
        return out

    def _validate_and_keep(self) -> dict:
        val = self.validate()
        record = {"step": self.step, "elapsed_min": round(self.elapsed / 60, 2), **val}
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if val["loss"] < self.best:
            self.best = val["loss"]
            export_checkpoint(self.model, self.spec.model, self.tok_dir, self.out / "best",
                              metadata={"step": self.step, "train_minutes": round(self.elapsed / 60, 2),
                                        "validation": val, "corpus": "Python standard library, train split",
                                        "objective": asdict(self.spec.objective)})
        return val

    def run(self, on_step: Callable[[StepInfo], None] | None = None) -> StepInfo | None:
        spec = self.spec
        budget = spec.max_minutes * 60
        last_ckpt = time.monotonic()
        info = None
        self.model.train()
        while self.step < spec.max_steps and self.elapsed < budget:
            t0 = time.monotonic()
            batch = self._batch(self.step)
            lr = _lr(spec, self.step, self.elapsed / budget)
            for group in self.opt.param_groups:
                group["lr"] = lr
            g = torch.Generator().manual_seed(spec.seed * 1_000_003 + self.step)
            parts = diffusion_loss(self.model, batch, spec.objective, g)
            self.opt.zero_grad(set_to_none=True)
            parts.total.backward()
            torch.nn.utils.clip_grad_norm_(trainable(self.model), 1.0)
            self.opt.step()
            self.step += 1
            dt = time.monotonic() - t0
            self.elapsed += dt
            val = None
            if self.step % spec.eval_every == 0:
                val = self._validate_and_keep()
            if time.monotonic() - last_ckpt >= spec.checkpoint_seconds:
                self.save_state()
                last_ckpt = time.monotonic()
            info = StepInfo(self.step, float(parts.total.detach()), parts.diffusion, parts.ar, parts.accuracy, lr,
                            batch.tokens / dt, self.elapsed, val)
            if on_step is not None:
                on_step(info)
        if info is not None and self.step % spec.eval_every:
            info.val = self._validate_and_keep()
        self.save_state()
        return info
