"""``redraft demo``: the demo jobs on the model shipped in the repo, one after another, with a few rows of each.

Each demo is an ordinary job config under ``configs/`` (run any of them alone with ``redraft run``); this command
runs them in one process (one local Ray), prints what went in and what came out for the first rows of each, and
ends with one summary line per job. The inputs come from the test split of the Python standard library, which
the demo model ``configs/models/code-tiny`` never trained on.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

EXIT_OK, EXIT_JOB_FAILED, EXIT_CONFIG = 0, 1, 2


@dataclass(frozen=True)
class Demo:
    name: str
    config: str
    what: str


DEMOS = (
    Demo("lines", "configs/code_lines.yaml", "line infill: one missing line of code, both sides visible"),
    Demo("bodies", "configs/code_infill.yaml", "function-body infill: a whole body between signature and next code"),
    Demo("edit", "configs/code_edit.yaml", "span edit: marked spans of code redrawn in place"),
    Demo("structured", "configs/structured.yaml", "structured record: JSON that follows a schema"),
    Demo("generate", "configs/demo.yaml", "short generation: continue a function signature"),
)


def add_parser(sub) -> None:
    """Register ``redraft demo`` on the CLI's subparsers."""
    p = sub.add_parser(
        "demo", help="run the demo jobs (code infill, edit, structured, generation) on the shipped model",
        description="Run the demo jobs one after another on the model shipped in the repo "
                    "(configs/models/code-tiny, trained here on the Python standard library), print a few rows of "
                    "each, and a summary. Run it from the repository root. Each demo is a job config you can run "
                    "alone: " + ", ".join(f"{d.name}={d.config}" for d in DEMOS) + ".",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", default=[], choices=[d.name for d in DEMOS], metavar="NAME",
                   help="run only this demo (repeatable): " + ", ".join(d.name for d in DEMOS))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a value in every demo config, e.g. --set engine.checkpoint=/models/mine")
    p.add_argument("--out", metavar="DIR", help="write each demo's output to DIR/NAME instead of its config's "
                                                "output.path (out/...)")
    p.add_argument("--rows", type=int, default=3, metavar="N", help="rows to show per demo (default 3)")


def _short(text: str, width: int = 100) -> str:
    text = text.replace("\n", "⏎")
    return text if len(text) <= width else text[: width - 1] + "…"


def _last_line(text: str) -> str:
    return text.rstrip("\n").rsplit("\n", 1)[-1] if text.strip() else text


def _first_line(text: str) -> str:
    return text.lstrip("\n").split("\n", 1)[0]


def _changes(before: str, after: str) -> list[tuple[str, str]]:
    ops = difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes()
    return [(before[i1:i2], after[j1:j2]) for op, i1, i2, j1, j2 in ops if op != "equal"]


def _show_row(kind: str, source: dict, row: dict) -> list[str]:
    if row.get("status") != "ok":
        return [f"  {row['id']}: {row.get('status')}: {row.get('error')}"]
    out = row.get("output") or ""
    if kind == "infill":
        lines = [f"  {row['id']}",
                 f"    before : {_short(_last_line(source.get('prefix', '')))}",
                 f"    fill   : {_short(out)}"]
        if "original" in source:
            lines.append(f"    real   : {_short(source['original'])}")
        lines.append(f"    after  : {_short(_first_line(source.get('suffix', '')))}")
        return lines
    if kind == "edit":
        lines = [f"  {row['id']}"]
        for old, new in _changes(source.get("text", ""), out)[:3] or [("", "")]:
            lines += [f"    was    : {_short(old)}", f"    now    : {_short(new)}"]
        return lines
    if kind == "generate":
        return [f"  {row['id']}", f"    prompt : …{_short(_last_line(source.get('text', '')), 60)}",
                f"    output : {_short(out)}"]
    return [f"  {row['id']}: {_short(out)}"]


def _sources(cfg) -> dict[str, dict]:
    """Input rows by id (the demo inputs are small JSON Lines files)."""
    rows = {}
    with open(cfg.input.path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                rows[str(rec.get(cfg.input.id_column))] = rec
    return rows


def _outputs(path: str) -> list[dict]:
    import pyarrow.parquet as pq

    files = sorted(str(p) for p in Path(path).glob("part-*.parquet"))
    return pq.read_table(files).to_pylist() if files else []


def _run_one(demo: Demo, overrides: list[str], show: int, out: str | None) -> tuple[str, int]:
    from .config import ConfigError, load_config
    from .run import JobError, run_job

    try:
        extra = [f"output.path={Path(out) / demo.name}"] if out else []
        cfg = load_config(demo.config, [*overrides, *extra])
    except ConfigError as err:
        return "config error: " + "; ".join(err.problems), EXIT_CONFIG
    started = time.monotonic()
    try:
        result = run_job(cfg)
    except JobError as err:
        return f"failed: {err}", EXIT_JOB_FAILED
    s = result.summary
    sources = _sources(cfg)
    rows = sorted(_outputs(cfg.output.path), key=lambda r: str(r["id"]))
    print(f"\n== {demo.name}: {demo.what}  ({demo.config})")
    for row in rows[:show]:
        print("\n".join(_show_row(cfg.task.kind, sources.get(str(row["id"]), {}), row)))
    line = (f"{s.get('rows_ok', 0)} ok, {s.get('rows_error', 0)} error rows, "
            f"{time.monotonic() - started:.0f} s -> {cfg.output.path}")
    return line, result.exit_code


def cmd_demo(args) -> int:
    """Run the demos; exit 0 when every one ran (error rows within each job's limit)."""
    demos = [d for d in DEMOS if not args.only or d.name in args.only]
    missing = [d.config for d in demos if not Path(d.config).is_file()]
    if missing:
        print(f"redraft: error: {', '.join(missing)} not found: run 'redraft demo' from the repository root",
              file=sys.stderr)
        return EXIT_CONFIG
    results = []
    try:
        for demo in demos:
            results.append((demo.name, *_run_one(demo, args.overrides, args.rows, args.out)))
    except KeyboardInterrupt:
        print("redraft: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print("\ndemo summary:")
    for name, line, _ in results:
        print(f"  {name:<11} {line}")
    return max(code for _, _, code in results)
