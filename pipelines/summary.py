"""A job's summary: the figures of every output row and of this run (``summary.json``), and the table the CLI
prints from them."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pyarrow.compute as pc

from .output import read_results


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def summarize(cfg, out_loc, shards, this_run: Counter, rows_resumed: int, wall: float, started_at: str,
               params) -> dict:
    table = read_results(out_loc, [s.key for s in shards])
    status = table.column("status")
    ok_mask = pc.equal(status, "ok")
    rows_total = table.num_rows
    rows_ok = pc.sum(ok_mask).as_py() or 0
    ok_rows = table.filter(ok_mask)
    tokens = pc.sum(ok_rows.column("num_output_tokens")).as_py() or 0
    mean_tpp = pc.mean(ok_rows.column("tokens_per_pass")).as_py() if rows_ok else 0.0
    mean_seconds = pc.mean(ok_rows.column("seconds")).as_py() if rows_ok else 0.0
    errors = Counter(table.filter(pc.invert(ok_mask)).column("error").to_pylist())
    run_tokens = this_run.get("output_tokens", 0)
    busy = this_run.get("engine_seconds", 0.0)  # summed over engine actors (vLLM backend: not measured, 0)
    return {
        "job": cfg.job.name,
        "task": cfg.task.kind,
        "rows_total": rows_total,
        "rows_ok": rows_ok,
        "rows_error": rows_total - rows_ok,
        "error_fraction": (rows_total - rows_ok) / rows_total if rows_total else 0.0,
        "max_error_fraction": cfg.job.max_error_fraction,
        "rows_generated_this_run": this_run.get("rows", 0),
        "rows_resumed": rows_resumed,
        "output_tokens": tokens,
        "output_tokens_this_run": run_tokens,
        "tokens_per_second": run_tokens / wall if wall > 0 else 0.0,  # = tokens_per_second_wall (older name)
        # wall: this run's tokens over the whole command (Ray start, actors, model load included); engine: over
        # the seconds spent inside the engine's generate calls, summed over actors (steady state, per engine)
        "tokens_per_second_wall": run_tokens / wall if wall > 0 else 0.0,
        "tokens_per_second_engine": run_tokens / busy if busy > 0 else None,
        "engine_busy_seconds": busy,
        "mean_tokens_per_pass": mean_tpp or 0.0,
        "mean_seconds_per_row": mean_seconds or 0.0,
        "wall_seconds": wall,
        "started_at": started_at,
        "finished_at": now_utc(),
        "output_path": cfg.output.path,
        "output_files": len(shards),
        "sampling_hash": params.digest(),
        "top_errors": [{"error": e, "rows": n} for e, n in errors.most_common(5)],
        "config": cfg.redacted(),
    }


def format_summary(summary: dict) -> str:
    """The summary as a small table for the terminal."""
    pct = lambda x: f"{x:.1%}"  # noqa: E731
    rows = [
        ("task", summary["task"]),
        ("rows", f"{summary['rows_total']:,}"),
        ("ok", f"{summary['rows_ok']:,}"),
        ("error", f"{summary['rows_error']:,} ({pct(summary['error_fraction'])}; "
                  f"max {pct(summary['max_error_fraction'])})"),
        ("generated this run", f"{summary['rows_generated_this_run']:,}"),
        ("done in earlier runs", f"{summary['rows_resumed']:,}"),
        ("output tokens", f"{summary['output_tokens']:,}"),
        ("tokens / second", f"{summary['tokens_per_second']:,.1f} wall (this run)"
                            + (f", {engine:,.1f} per engine while generating ({summary['engine_busy_seconds']:,.1f} s)"
                               if (engine := summary.get("tokens_per_second_engine")) else "")),
        ("mean tokens / pass", f"{summary['mean_tokens_per_pass']:.2f}"),
        ("mean seconds / row", f"{summary['mean_seconds_per_row']:,.2f} (engine time of ok rows)"),
        ("wall time", f"{summary['wall_seconds']:,.1f} s"),
        ("output", f"{summary['output_path']} ({summary['output_files']} files + summary.json)"),
    ]
    if summary.get("attempts", 1) > 1:
        rows.append(("attempts", f"{summary['attempts']} (Ray lost a node, actor or object; job.max_attempts)"))
    for i, e in enumerate(summary.get("top_errors", [])[:3]):
        msg = e["error"] if len(e["error"]) <= 70 else e["error"][:67] + "..."
        rows.append(("top errors" if i == 0 else "", f"{e['rows']:,} x {msg}"))
    width = max(len(k) for k, _ in rows)
    title = f"redraft job '{summary['job']}': {summary.get('status', 'ok')}"
    line = "-" * max(len(title), width + 3 + max(len(v) for _, v in rows))
    body = "\n".join(f"{k:<{width}} | {v}" for k, v in rows)
    return f"{title}\n{line}\n{body}\n{line}"
