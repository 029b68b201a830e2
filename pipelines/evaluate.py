"""``redraft eval CONFIG``: fill quality of a checkpoint on held-out holes, next to baselines, in one run.

Holes are cut deterministically from a corpus split (``eval_holes``), written as an infill input file, and
filled by ordinary ``redraft run`` infill jobs on Ray Data (the same task code as any bulk job), once per model
and setting; then every fill is scored against its truth (``eval_metrics``). Baselines in the same run:

* ``random``: the same architecture and tokenizer with freshly initialised weights (``random_baseline``);
* ``prefix-only``: the same model with the suffix hidden (what bidirectional infilling buys);
* ``most-frequent-line`` / ``empty``: trivial fills; ``most-frequent-token``: its token accuracy.

Settings: ``settings`` (named sampling overrides) and/or a ``sweep`` (``eval_sweep``: samplers' knobs x pass
budgets x weight precisions). All jobs share one Ray session. Per result: exact match, token accuracy,
character similarity, tokens per pass, passes per canvas, seconds, and the self-correction share (positions
accepted on one pass and renoised on the next, from the rows' ``num_self_corrections``, over the fills' tokens);
quantized settings are also compared with the same setting at full precision (``quantization_deltas``).

Writes ``OUT/report.json`` (and ``OUT/report.png``, quality against tokens per pass, one line per sampler, when
matplotlib is installed) and prints a table.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from .config import ConfigError, SamplingConfig, _describe, _Model, apply_overrides
from .eval_sweep import EvalSetting, EvalSweep, expand_sweep, quantization_deltas


class EvalModel(_Model):
    name: str = Field(description="Label in the report.")
    checkpoint: str = Field(description="Checkpoint folder (Hugging Face layout).")


class EvalConfig(_Model):
    corpus: str = Field(default="stdlib", description="Folder of .py files, or 'stdlib'.")
    split: str = Field(default="test", description="train | validation | test (the fixed file-hash split), or "
                       "all (every file of your own corpus).")
    kind: str = Field(default="line", description="Hole kind: line, span or body.")
    holes: int = Field(default=100, ge=1, le=100_000, description="Holes to cut.")
    seed: int = Field(default=0, ge=0, description="Seed of the hole cutting (and of the fills' sampling).")
    models: list[EvalModel] = Field(min_length=1, description="Checkpoints to evaluate.")
    random_baseline: bool = Field(default=True, description="Also fill with random weights of the first model's "
                                  "shape and tokenizer.")
    prefix_only: bool = Field(default=True, description="Also fill with the suffix hidden (first model).")
    fill_tokens: int = Field(default=24, ge=1, description="Fill budget per hole; holes whose truth is longer "
                             "are not cut.")
    context_tokens: int = Field(default=128, ge=1, description="Tokens of the prefix given as context.")
    sampling: dict[str, Any] = Field(default_factory=dict, description="The jobs' sampling section.")
    settings: list[EvalSetting] = Field(default_factory=lambda: [EvalSetting(name="default")],
                                        description="Sampling settings to compare.")
    sweep: EvalSweep | None = Field(default=None, description="Settings to add as a grid (samplers' knobs x pass "
                                    "budgets x weight precisions); the baselines then run at its first setting.")
    batch_size: int = Field(default=32, ge=1, description="Rows per engine call.")
    output: str = Field(default="out/eval", description="Folder for the holes, the jobs and report.json.")


def load_eval_config(path: str | Path, overrides: list[str] | None = None) -> EvalConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found"]) from None
    except yaml.YAMLError as err:
        raise ConfigError([f"{path}: not valid YAML: {err}"]) from None
    try:
        cfg = EvalConfig.model_validate(apply_overrides(data, list(overrides or [])))
    except ValidationError as err:
        raise ConfigError(list(dict.fromkeys(_describe(e, EvalConfig) for e in err.errors()))) from None
    if cfg.split not in ("train", "validation", "test", "all"):
        raise ConfigError([f"split: must be train, validation, test or all, got {cfg.split!r}"])
    if cfg.kind not in ("line", "span", "body"):
        raise ConfigError([f"kind: must be line, span or body, got {cfg.kind!r}"])
    if cfg.sweep is not None:
        try:
            swept = expand_sweep(cfg.sweep)
        except ValueError as err:
            raise ConfigError([str(err)]) from None
        given = cfg.settings if "settings" in cfg.model_fields_set else []
        cfg = cfg.model_copy(update={"settings": given + swept})
    _check_settings(cfg)
    return cfg


def _check_settings(cfg: EvalConfig) -> None:
    """Every setting's sampling section is a valid job sampling section; names are unique."""
    problems, seen = [], set()
    for i, setting in enumerate(cfg.settings):
        if setting.name in seen:
            problems.append(f"settings[{i}].name: {setting.name!r} is used twice")
        seen.add(setting.name)
        try:
            SamplingConfig.model_validate({**cfg.sampling, **setting.sampling})
        except ValidationError as err:
            problems += [f"settings[{i}] ({setting.name}): sampling." + _describe(e, SamplingConfig)
                         for e in err.errors()]
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))


def _corpus_files(cfg: EvalConfig) -> list[tuple[str, str]]:
    from engine.training.corpus import list_files, stdlib_root

    root = stdlib_root() if cfg.corpus == "stdlib" else Path(cfg.corpus)
    split = None if cfg.split == "all" else cfg.split
    return [(rel, (root / rel).read_text(encoding="utf-8", errors="replace")) for rel in list_files(root, split)]


def _job(cfg: EvalConfig, name: str, checkpoint: Path, holes_file: Path, sampling: dict,
         quantization: str = "none") -> Path:
    """Run one infill job over ``holes_file``; returns its output folder."""
    from .config import validate_config
    from .run import JobError, run_job

    out = Path(cfg.output) / "jobs" / name
    shutil.rmtree(out, ignore_errors=True)
    job = validate_config({
        "input": {"path": str(holes_file), "format": "jsonl", "id_column": "id"},
        "output": {"path": str(out), "rows_per_file": max(cfg.holes, 1)},
        "task": {"kind": "infill", "infill_input": "columns", "prefix_column": "prefix", "suffix_column": "suffix",
                 "fill_tokens": cfg.fill_tokens, "context_tokens": cfg.context_tokens},
        "engine": {"backend": "redraft", "checkpoint": str(checkpoint), "device": "cpu", "dtype": "float32",
                   "quantization": quantization},
        "sampling": {"seed": cfg.seed, **sampling},
        "workers": {"batch_size": cfg.batch_size, "concurrency": 1, "num_cpus": 1},
        "job": {"name": f"eval-{name}", "max_error_fraction": 1.0, "resume": False},
    })
    result = run_job(job)
    if result.summary.get("rows_ok", 0) == 0:
        raise JobError(f"eval job {name!r}: no row was filled ({result.message})")
    return out


def _read_fills(out: Path) -> dict[str, dict]:
    import pyarrow.parquet as pq

    table = pq.read_table(sorted(str(p) for p in out.glob("part-*.parquet")))
    return {r["id"]: r for r in table.to_pylist()}


def _score_job(name: str, out: Path, holes, encode, canvas: int, fill_tokens: int) -> dict:
    from .eval_metrics import score

    fills = _read_fills(out)
    preds = [(fills.get(h.id) or {}).get("output") or "" for h in holes]
    rows = [fills.get(h.id) or {} for h in holes]
    ok = [r for r in rows if r.get("status") == "ok"]
    passes = sum(r["num_passes"] for r in ok)
    tokens = sum(r["num_output_tokens"] for r in ok)
    canvases = len(ok) * -(-fill_tokens // canvas)
    result = score(preds, [h.truth for h in holes], encode)
    result.update({
        "name": name, "errors": len(rows) - len(ok),
        "tokens_per_pass": tokens / max(passes, 1),
        "passes_per_canvas": passes / max(canvases, 1),
        "seconds": sum(r["seconds"] for r in ok),
        # positions accepted on one pass and renoised on the next, per token of the final fills
        "self_correction_share": sum(r.get("num_self_corrections") or 0 for r in ok) / max(tokens, 1),
    })
    return result


def run_eval(cfg: EvalConfig) -> dict:
    """Cut the holes, run every job, score; returns the report (also written to ``OUTPUT/report.json``)."""
    from engine.tokenizer import Tokenizer

    started = time.perf_counter()
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    first = Path(cfg.models[0].checkpoint)
    tok = Tokenizer(first)
    encode = lambda s: tok.encode(s, add_bos=False) if s else []  # noqa: E731
    canvas = json.loads((first / "config.json").read_text()).get("canvas_length", 256)
    files = _corpus_files(cfg)
    holes = _cut_holes(cfg, files, tok, encode)
    holes_file, blind = _write_holes(out, holes)
    results = _fill_holes(cfg, _models(cfg, first, out), holes, holes_file, blind, encode, canvas)
    trivial = _trivial_baselines(cfg, files, holes, tok, encode)
    report = {"corpus": cfg.corpus, "split": cfg.split, "kind": cfg.kind, "holes": len(holes), "seed": cfg.seed,
              "fill_tokens": cfg.fill_tokens, "context_tokens": cfg.context_tokens, "results": results,
              "trivial_baselines": trivial, "quantization_deltas": quantization_deltas(results),
              "self_correction_share": "positions accepted on one pass and renoised on the next, summed over the "
                                       "fills, divided by the fills' tokens",
              "seconds": round(time.perf_counter() - started, 1)}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(report, out / "report.png")
    return report


def _cut_holes(cfg: EvalConfig, files, tok, encode) -> list:
    from .eval_holes import cut_holes

    def offsets(text):
        return tok._tok.encode(text, add_special_tokens=False).offsets

    return cut_holes(files, cfg.kind, cfg.holes, cfg.seed, encode_offsets=offsets,
                     max_truth_tokens=cfg.fill_tokens, count_tokens=lambda s: len(encode(s)))


def _write_holes(out: Path, holes) -> tuple[Path, Path]:
    """The holes as infill input files: with their suffix, and with it hidden (the prefix-only baseline)."""
    holes_file = out / "holes.jsonl"
    holes_file.write_text("".join(json.dumps(h.row()) + "\n" for h in holes))
    blind = out / "holes_prefix_only.jsonl"
    blind.write_text("".join(json.dumps({**h.row(), "suffix": ""}) + "\n" for h in holes))
    return holes_file, blind


def _models(cfg: EvalConfig, first: Path, out: Path) -> list[tuple[str, Path]]:
    """``(name, checkpoint)`` of every model to fill with: the configured ones, then the random-weights twin."""
    models = [(m.name, Path(m.checkpoint)) for m in cfg.models]
    if cfg.random_baseline:
        from engine.training.model_io import random_twin

        models.append(("random-weights", random_twin(first, out / "random-weights")))
    return models


def _fill_holes(cfg: EvalConfig, models, holes, holes_file: Path, blind: Path, encode, canvas: int) -> list[dict]:
    """One infill job per model (and baseline) and setting, each scored against the truths."""
    first = Path(cfg.models[0].checkpoint)
    results = []
    for i, setting in enumerate(cfg.settings):
        sampling = {**cfg.sampling, **setting.sampling}
        # baselines run at every setting, or (a sweep) at the first one only; quantized: the models only
        baselines = setting.quantization == "none" and (cfg.sweep is None or i == 0)
        runs = [(n, c, holes_file) for n, c in (models if baselines else models[:len(cfg.models)])]
        if cfg.prefix_only and baselines:
            runs.append((f"{cfg.models[0].name}-prefix-only", first, blind))
        for name, ckpt, file in runs:
            label = f"{name}@{setting.name}"
            print(f"eval: {label} on {len(holes)} {cfg.kind} holes ...", file=sys.stderr, flush=True)
            job_out = _job(cfg, _safe(label), ckpt, file, sampling, setting.quantization)
            results.append({**_score_job(label, job_out, holes, encode, canvas, cfg.fill_tokens),
                            "setting": setting.name, "model": name, "sampling": sampling,
                            "sampler": sampling.get("sampler", "entropy_bound"),
                            "quantization": setting.quantization})
    return results


def _trivial_baselines(cfg: EvalConfig, files, holes, tok, encode) -> list[dict]:
    """The most frequent training line, the empty fill, and the most frequent token at every position."""
    from .eval_metrics import char_similarity, exact_match, most_frequent_line, most_frequent_token, token_accuracy

    train_texts = [t for _, t in _corpus_files(cfg.model_copy(update={"split": "train"}))] \
        if cfg.split != "all" else [t for _, t in files]
    line = most_frequent_line(train_texts)
    top = most_frequent_token(train_texts[:200], encode)
    truths = [h.truth for h in holes]
    return [
        {"name": f"most-frequent-line ({line!r})", "exact_match": sum(exact_match(line, t) for t in truths) / len(truths),
         "token_accuracy": sum(token_accuracy(encode(line), encode(t)) for t in truths) / len(truths),
         "char_similarity": sum(char_similarity(line, t) for t in truths) / len(truths)},
        {"name": "empty fill", "exact_match": sum(exact_match("", t) for t in truths) / len(truths),
         "token_accuracy": 0.0, "char_similarity": sum(char_similarity("", t) for t in truths) / len(truths)},
        {"name": f"most-frequent-token ({tok.decode([top])!r} at every position)",
         "token_accuracy": sum(token_accuracy([top] * len(encode(t)), encode(t)) for t in truths) / len(truths)},
    ]


def _safe(label: str) -> str:
    """A job folder name for a result label (``code-tiny@top_k=4,steps=8`` -> ``code-tiny_top_k-4_steps-8``)."""
    return "".join(c if c.isalnum() or c in "-_." else ("_" if c in "@," else "-") for c in label)


def _plot(report: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("eval: matplotlib is not installed; no plot (pip install matplotlib)", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    full = [r for r in report["results"] if r["quantization"] == "none"]
    models = list(dict.fromkeys(r["model"] for r in full))
    lines: dict[tuple, list] = {}
    for r in full:  # one line per model and sampler (and pass budget): its points are the knob values
        steps = r["sampling"].get("max_denoising_steps")
        lines.setdefault((r["model"], r["sampler"], steps), []).append(r)
    budgets = {k[2] for k in lines}
    for (model, sampler, steps), rows in lines.items():
        rows = sorted(rows, key=lambda r: r["tokens_per_pass"])
        label = f"{model}, {sampler}" + (f", {steps} passes" if len(budgets) > 1 else "")
        style = "o-" if len(rows) > 1 else "x"
        ax.plot([r["tokens_per_pass"] for r in rows], [r["char_similarity"] for r in rows], style, label=label,
                markersize=8 if model != models[0] else 5)
    for i, t in enumerate(r for r in report["trivial_baselines"] if "char_similarity" in r):
        ax.axhline(t["char_similarity"], color="grey", linestyle=("--", ":")[i % 2], linewidth=1,
                   label=t["name"][:40])
    ax.set_xlabel("tokens per pass")
    ax.set_ylabel("character similarity")
    ax.set_title(f"{report['kind']} infill, {report['holes']} held-out holes")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_report(report: dict) -> str:
    head = (f"{'fill':44} {'exact':>6} {'tok acc':>8} {'char sim':>9} {'tok/pass':>9} {'pass/canvas':>12} "
            f"{'seconds':>8} {'corr/tok':>9}")
    lines = [f"{report['kind']} infill: {report['holes']} holes from the {report['split']} split of {report['corpus']}",
             head, "-" * len(head)]
    for r in report["results"]:
        lines.append(f"{r['name'][:44]:44} {r['exact_match']:6.1%} {r['token_accuracy']:8.3f} "
                     f"{r['char_similarity']:9.3f} {r['tokens_per_pass']:9.2f} {r['passes_per_canvas']:12.2f} "
                     f"{r['seconds']:8.1f} {r['self_correction_share']:9.3f}")
    for r in report["trivial_baselines"]:
        em = f"{r['exact_match']:6.1%}" if "exact_match" in r else f"{'':6}"
        cs = f"{r['char_similarity']:9.3f}" if "char_similarity" in r else f"{'':9}"
        lines.append(f"{r['name'][:44]:44} {em} {r['token_accuracy']:8.3f} {cs}")
    if report.get("quantization_deltas"):
        lines += ["", f"{'quantized against full precision':44} {'exact':>6} {'tok acc':>8} {'char sim':>9}"]
        for d in report["quantization_deltas"]:
            lines.append(f"{d['name'][:44]:44} {d['delta_exact_match']:+6.1%} {d['delta_token_accuracy']:+8.3f} "
                         f"{d['delta_char_similarity']:+9.3f}")
    return "\n".join(lines)


def cmd_eval(args) -> int:
    from .run import JobError

    try:
        cfg = load_eval_config(args.config, args.overrides)
    except ConfigError as err:
        print("eval config error: " + "\neval config error: ".join(err.problems), file=sys.stderr)
        return 2
    try:
        report = run_eval(cfg)
    except (JobError, ValueError, FileNotFoundError) as err:
        print(f"redraft eval: error: {err}", file=sys.stderr)
        return 1
    print(format_report(report))
    print(f"report: {Path(cfg.output) / 'report.json'}")
    return 0


def add_parser(sub) -> None:
    import argparse

    p = sub.add_parser(
        "eval", help="measure infill quality on held-out holes, next to baselines",
        description="Cut holes (single lines, token spans or function bodies) deterministically from a corpus "
                    "split, fill them with ordinary infill jobs (Ray Data, the bulk task code), and report exact "
                    "match, token accuracy, character similarity, tokens per pass and passes per canvas for each "
                    "model and sampling setting, next to random weights, prefix-only filling and trivial fills.",
        epilog="example:\n  redraft eval configs/eval_code.yaml\n  redraft eval configs/eval_code.yaml --set holes=20",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", metavar="CONFIG.yaml", help="eval config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override one value, e.g. --set holes=20")
