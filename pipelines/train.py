"""``redraft train CONFIG``: train a small DiffusionGemma-architecture model on a corpus of Python source.

The YAML is validated here (pydantic, every field described) and converted once into the engine's
``TrainSpec``; the loop itself is pure PyTorch (``engine/training``). Progress: a bar with loss and tokens/s on
a terminal, a plain line every ``log_every_s`` seconds otherwise. Kill it at any time: the same command resumes
from the last checkpoint (written every ``checkpoint_minutes``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from .config import ConfigError, _describe, _Model, apply_overrides


class TrainModelConfig(_Model):
    vocab_size: int = Field(default=2048, ge=262, le=262144, description="BPE vocabulary size (with special tokens).")
    hidden_size: int = Field(default=128, ge=8, description="Model width.")
    intermediate_size: int = Field(default=256, ge=8, description="Dense MLP width.")
    num_hidden_layers: int = Field(default=4, ge=1, description="Layers (the last one is full attention).")
    num_attention_heads: int = Field(default=4, ge=1, description="Query heads.")
    num_key_value_heads: int = Field(default=2, ge=1, description="KV heads of sliding-window layers.")
    head_dim: int = Field(default=32, ge=2, description="Head dim of sliding-window layers.")
    global_head_dim: int = Field(default=64, ge=2, description="Head dim of full-attention layers.")
    num_global_key_value_heads: int = Field(default=1, ge=1, description="KV heads of full-attention layers.")
    sliding_window: int = Field(default=256, ge=1, description="Sliding-window size.")
    num_experts: int = Field(default=4, ge=1, description="Routed experts per layer.")
    top_k_experts: int = Field(default=2, ge=1, description="Experts per token.")
    moe_intermediate_size: int = Field(default=128, ge=1, description="Expert width.")
    canvas_length: int = Field(default=32, ge=4, le=1024, description="Tokens per canvas (block).")


class TrainDataConfig(_Model):
    corpus: str = Field(default="stdlib", description="Folder of .py files, or 'stdlib' for this Python's "
                        "standard library. Split by file into train/validation/test with a fixed hash; test "
                        "folders are left out.")
    context_tokens: int = Field(default=128, ge=8, description="Most tokens of text before a hole (the "
                                "infill/edit tasks' context_tokens should not exceed it).")
    line_budget: int = Field(default=24, ge=2, description="Largest fill budget of a single-line hole.")
    kind_weights: dict[str, float] = Field(
        default={"line": 0.5, "span": 0.2, "body": 0.1, "continue": 0.2},
        description="Share of each example kind: 'line' (single-line infill), 'span' (4-32 tokens), 'body' "
                    "(function bodies), 'continue' (generation).")
    tokenizer_chars: int = Field(default=4_000_000, ge=10_000, description="Characters of the train split the "
                                 "BPE is trained on.")


class TrainLoopConfig(_Model):
    out_dir: str = Field(default="out/train", description="Tokenizer, resumable state, best/ checkpoint, log.")
    batch_size: int = Field(default=32, ge=1, description="Canvases per step.")
    lr: float = Field(default=3e-3, gt=0, le=1, description="Peak learning rate (AdamW).")
    warmup_steps: int = Field(default=200, ge=0, description="Linear warm-up steps.")
    max_minutes: float = Field(default=60.0, gt=0, description="Training time budget, summed over resumed runs; "
                               "the learning rate decays over its last 20%.")
    max_steps: int = Field(default=1_000_000, ge=1, description="Stop after this many steps at most.")
    checkpoint_minutes: float = Field(default=3.0, gt=0, description="Resumable state written this often.")
    eval_every: int = Field(default=200, ge=1, description="Validate (and keep best/) every N steps.")
    val_examples: int = Field(default=256, ge=1, description="Fixed validation examples.")
    threads: int = Field(default=1, ge=1, le=256, description="torch threads (1 is steadiest on a shared box).")
    seed: int = Field(default=0, ge=0, description="Seed of the initial weights, examples and noise.")
    export: str | None = Field(default=None, description="Copy the best checkpoint here at the end (e.g. "
                               "configs/models/code-tiny).")
    log_every_s: float = Field(default=30.0, gt=0, description="Plain progress line interval when not on a "
                               "terminal.")


class TrainConfig(_Model):
    model: TrainModelConfig = Field(default_factory=TrainModelConfig, description="Model shape.")
    data: TrainDataConfig = Field(default_factory=TrainDataConfig, description="Corpus and example layouts.")
    train: TrainLoopConfig = Field(default_factory=TrainLoopConfig, description="Loop settings.")

    def to_spec(self):
        """The engine's ``TrainSpec`` (the one conversion from config to engine dataclasses for training)."""
        from engine.training import LayoutSpec, ModelSpec, TrainSpec
        from engine.training.corpus import stdlib_root

        m, d, t = self.model, self.data, self.train
        corpus = str(stdlib_root()) if d.corpus == "stdlib" else d.corpus
        return TrainSpec(
            out_dir=t.out_dir, corpus_root=corpus, model=ModelSpec(**m.model_dump()),
            layout=LayoutSpec(canvas_length=m.canvas_length, context_tokens=d.context_tokens,
                              line_budget=d.line_budget),
            kind_weights=dict(d.kind_weights), tokenizer_chars=d.tokenizer_chars, batch_size=t.batch_size,
            lr=t.lr, warmup_steps=t.warmup_steps, max_steps=t.max_steps, max_minutes=t.max_minutes,
            checkpoint_seconds=t.checkpoint_minutes * 60, eval_every=t.eval_every, val_examples=t.val_examples,
            seed=t.seed)


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read and validate a training YAML (plus ``--set`` overrides); raises ``ConfigError`` naming fields."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found"]) from None
    except yaml.YAMLError as err:
        raise ConfigError([f"{path}: not valid YAML: {err}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping of sections (model, data, train)"])
    data = apply_overrides(data, list(overrides or []))
    try:
        cfg = TrainConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(list(dict.fromkeys(_describe(e, TrainConfig) for e in err.errors()))) from None
    unknown = set(cfg.data.kind_weights) - {"line", "span", "body", "continue"}
    if unknown or not any(v > 0 for v in cfg.data.kind_weights.values()):
        raise ConfigError([f"data.kind_weights: kinds are line, span, body, continue with at least one > 0; got "
                           f"{cfg.data.kind_weights}"])
    return cfg


class _Progress:
    """A tqdm bar on a terminal; otherwise a plain line every ``every_s`` seconds (logs stay readable)."""

    def __init__(self, total_minutes: float, done_minutes: float, every_s: float):
        self.tty, self.every, self.last = sys.stderr.isatty(), every_s, 0.0
        self.bar = None
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=round(total_minutes, 1), initial=round(done_minutes, 1), unit="min",
                            desc="train", bar_format="{desc} {n:.1f}/{total} min |{bar}| {postfix}")

    def __call__(self, info) -> None:
        text = (f"step {info.step} loss {info.loss:.3f} (diffusion {info.diffusion:.3f}, ar {info.ar:.3f}) "
                f"{info.tokens_per_s:,.0f} tok/s lr {info.lr:.2e}")
        if info.val:
            text += f" | val loss {info.val['loss']:.3f} acc {info.val['acc_t10']:.3f}"
        if self.bar is not None:
            self.bar.n = round(info.elapsed_s / 60, 1)
            self.bar.set_postfix_str(text, refresh=True)
        elif info.val or time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            print(f"[{info.elapsed_s / 60:6.1f} min] {text}", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def cmd_train(args) -> int:
    """Run ``redraft train``; returns the exit code (0 done, 1 failed, 2 bad config)."""
    try:
        cfg = load_train_config(args.config, args.overrides)
    except ConfigError as err:
        print("train config error: " + "\ntrain config error: ".join(err.problems), file=sys.stderr)
        return 2
    import shutil

    import torch

    from engine.training import Trainer

    torch.set_num_threads(cfg.train.threads)
    spec = cfg.to_spec()
    try:
        trainer = Trainer(spec, log=lambda s: print(s, file=sys.stderr, flush=True))
    except (ValueError, FileNotFoundError) as err:
        print(f"redraft train: error: {err}", file=sys.stderr)
        return 1
    progress = _Progress(spec.max_minutes, trainer.elapsed / 60, cfg.train.log_every_s)
    try:
        info = trainer.run(progress)
    except KeyboardInterrupt:
        progress.close()
        trainer.save_state()
        print(f"redraft train: interrupted at step {trainer.step}; run the same command again to resume",
              file=sys.stderr)
        return 130
    progress.close()
    best = Path(spec.out_dir) / "best"
    print(f"trained {trainer.step} steps in {trainer.elapsed / 60:.1f} min; best validation loss "
          f"{trainer.best:.4f}; checkpoint: {best}")
    if info is not None and info.val:
        print(f"last validation: {info.val}")
    if cfg.train.export and best.is_dir():
        dest = Path(cfg.train.export)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(best, dest)
        print(f"copied the best checkpoint to {dest}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a small diffusion model on Python source (resumable)",
        description="Train a small DiffusionGemma-architecture model (uniform-state diffusion loss, "
                    "self-conditioning, an autoregressive co-loss on the encoder) on the infill, edit and "
                    "generate layouts redraft's tasks use. Writes OUT/best/, a Hugging Face checkpoint that "
                    "'redraft run' and transformers load. Kill it at any time; the same command resumes.",
        epilog="example:\n  redraft train configs/train_code.yaml\n  redraft train configs/train_code.yaml "
               "--set train.max_minutes=5 --set train.out_dir=out/train-small",
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("config", metavar="CONFIG.yaml", help="training config (sections model, data, train)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override one value, e.g. --set train.max_minutes=10")
