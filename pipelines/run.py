"""``run_job``: read -> worker (engine) -> stage -> compact -> summary, on Ray Data.

Fatal problems (no input, checkpoint missing, output not writable, a resume that does not match the earlier
run) raise ``JobError`` before any work starts. Bad rows never do: they are error rows, and the job only fails
at the end when their fraction exceeds ``job.max_error_fraction``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import re
import signal
import threading
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.fs as pafs

from workers.batch import RedraftBatchWorker

from . import console
from .config import JobConfig
from .inputs import InputPlanError, InputReadError, make_datasource, make_shards, plan_inputs
from .output import STAGING, OutputLayout, compact_shard, read_results, stage_batch
from .convert import build_task
from .recovery import (RESUME_HINT, LostCapacity, lost_capacity, storage_cause, storage_failed,
                       storage_stop_message)
from .storage import Location, StorageError, retry_reads

logger = logging.getLogger("redraft")


class JobError(Exception):
    """The job cannot start or cannot finish; the message says why and names the config field when one is
    at fault."""


@dataclass
class JobResult:
    summary: dict
    exit_code: int  # 0 ok, 1 error fraction exceeded
    message: str = ""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def check_checkpoint(cfg: JobConfig) -> None:
    """Fail fast on a missing or unreadable checkpoint, or one whose tensor shapes do not fit its config.json (read
    from the safetensors headers only), before Ray starts; the workers would fail later, once per actor."""
    from engine import CheckpointError
    from engine.config import DiffusionGemmaConfig

    path = Path(cfg.engine.checkpoint).expanduser()
    where = f"engine.checkpoint: {cfg.engine.checkpoint}"
    if not path.exists():
        raise JobError(f"{where}: directory not found (it must exist on every worker node)")
    if not path.is_dir():
        raise JobError(f"{where}: not a directory")
    if cfg.engine.backend == "vllm":
        from workers.vllm_worker import check_vllm_installed, model_max_len

        try:
            check_vllm_installed()
            model_max_len(path, cfg.engine.vllm.max_model_len)
        except (ImportError, ValueError) as err:
            raise JobError(f"engine.checkpoint: {err}" if isinstance(err, ValueError) else str(err)) from None
    else:
        try:
            DiffusionGemmaConfig.from_dir(path)
        except CheckpointError as err:
            raise JobError(f"engine.checkpoint: {err}") from None
        except (ValueError, KeyError, TypeError) as err:
            raise JobError(f"engine.checkpoint: {path}/config.json is not a DiffusionGemma config ({err})") from None
    if not (path / "tokenizer.json").is_file():
        raise JobError(f"{where}: no tokenizer.json (text tasks need the checkpoint's tokenizer)")
    shards = sorted(path.glob("*.safetensors"))
    if not shards:
        raise JobError(f"{where}: no *.safetensors weight files")
    from safetensors import safe_open

    for shard in shards:  # headers only: catches truncated or corrupt files before any actor starts
        try:
            with safe_open(str(shard), framework="pt") as f:
                f.keys()
        except Exception as err:  # noqa: BLE001 - safetensors raises several types for a bad header
            raise JobError(f"engine.checkpoint: {shard} is not a readable safetensors file ({err})") from None
    if cfg.engine.backend != "vllm":
        from engine.weights import check_tensor_shapes

        try:  # headers only, against config.json's shapes: a mismatch is reported before any actor starts
            check_tensor_shapes(path)
        except CheckpointError as err:
            raise JobError(f"engine.checkpoint: {err}") from None


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler or Kubernetes stopping the job): handled like Ctrl-C, so staged rows are kept."""

    signum = signal.SIGTERM


def _on_sigterm(signum, frame):
    raise Terminated()


def handle_sigterm() -> None:
    """Make SIGTERM stop the job like Ctrl-C does (``Terminated``, a ``KeyboardInterrupt``). The CLI calls it;
    ``ray.init`` replaces the handler, so ``_init_ray`` puts it back."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def _init_ray(cfg: JobConfig) -> None:
    """Connect to RAY_ADDRESS's cluster, or start a local one with enough logical CPUs that the engine actors
    cannot starve the read and write tasks (Ray Data's actor pipelines deadlock when the actors hold every CPU)."""
    import ray

    if ray.is_initialized():
        return
    ours = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is _on_sigterm
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=logging.WARNING)
    else:
        c = cfg.workers.concurrency
        actors = max(c) if isinstance(c, list) else (c or 1)
        need = math.ceil(actors * cfg.workers.num_cpus) + 2
        # address='local': a new cluster even when another one's address is in /tmp/ray (ray start, a test)
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, need), logging_level=logging.WARNING)
    if ours:  # ray.init installed its own SIGTERM handler (it exits without redraft's resume message)
        handle_sigterm()


def _resources(cfg: JobConfig) -> dict:
    """num_gpus / num_cpus / concurrency for the engine actors (defaults per WorkersConfig)."""
    import ray

    w = cfg.workers
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    # a cluster named by RAY_ADDRESS may autoscale GPU nodes on demand; a local one never does
    may_grow = bool(os.environ.get("RAY_ADDRESS"))
    num_gpus = w.num_gpus
    if num_gpus is None:
        wants_gpu = cfg.engine.device == "cuda" or (cfg.engine.device == "auto" and cluster_gpus > 0)
        num_gpus = 1 if wants_gpu else 0
    if num_gpus > 0 and cfg.engine.device == "cpu":
        raise JobError("workers.num_gpus: GPUs requested for actors, but engine.device is 'cpu'")
    if cfg.engine.device == "cuda" and num_gpus == 0:
        raise JobError("workers.num_gpus: 0, but engine.device is 'cuda'")
    if num_gpus > cluster_gpus:
        problem = (f"{num_gpus:g} GPUs per actor, but the Ray cluster has {cluster_gpus:g} GPUs"
                   + (" (engine.device is 'cuda')" if w.num_gpus is None else ""))
        if not may_grow:
            raise JobError(f"{'workers.num_gpus' if w.num_gpus is not None else 'engine.device'}: {problem}")
        logger.warning("%s now; the job waits for the cluster to add GPU nodes", problem)
    concurrency = w.concurrency
    if concurrency is None:
        concurrency = max(1, math.floor(cluster_gpus / num_gpus)) if num_gpus else 1
    elif isinstance(concurrency, list):
        concurrency = tuple(concurrency)
    least = concurrency[0] if isinstance(concurrency, tuple) else concurrency
    cluster_cpus = ray.cluster_resources().get("CPU", 0)
    if least * w.num_cpus > cluster_cpus - 0.5:
        raise JobError(f"workers: {least} actors x {w.num_cpus:g} CPUs leave no CPU for reading and writing on "
                       f"this Ray cluster ({cluster_cpus:g} CPUs); lower workers.concurrency or workers.num_cpus")
    return {"num_gpus": num_gpus, "num_cpus": w.num_cpus, "concurrency": concurrency}


def _manifest(cfg: JobConfig, files) -> dict:
    return {"format": 1, "job": cfg.job.name, "fingerprint": cfg.fingerprint(),
            "fingerprint_fields": cfg.fingerprint_fields(), "files": [f.to_dict() for f in files],
            "updated_at": _now()}


def _check_resume(cfg: JobConfig, manifest: dict, out_uri: str) -> None:
    if manifest.get("fingerprint") == cfg.fingerprint():
        return
    before, now = manifest.get("fingerprint_fields", {}), cfg.fingerprint_fields()
    changed = []
    for section in sorted(set(before) | set(now)):
        a, b = before.get(section), now.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += [f"{section}.{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
                        if a.get(k) != b.get(k)]
        elif a != b:
            changed.append(f"{section}: {a!r} -> {b!r}")
    raise JobError(
        f"output.path: {out_uri} holds an earlier run of a different job ({'; '.join(changed) or 'fingerprint'}). "
        "Use another output.path, or set job.resume=false to delete that output and start over.")


_ERROR_LINE = re.compile(r"^([\w.]*(?:Error|Exception|Interrupt)): (.+)$")


def _root_cause(err: BaseException) -> str:
    """The innermost ``SomeError: message`` line of an exception chain (Ray nests remote tracebacks as text)."""
    text = "".join(traceback.format_exception(err))
    found = [m for m in (_ERROR_LINE.match(line.strip()) for line in text.splitlines()) if m]
    if not found:
        return f"{type(err).__name__}: {err}"
    name, message = found[-1].groups()
    return f"{name.rsplit('.', 1)[-1]}: {message}"


def _input_read_error(err: BaseException) -> str | None:
    """The message of an ``InputReadError`` (an input file that cannot be read) anywhere in Ray's exception chain."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, InputReadError):
            return _root_cause(err).removeprefix("InputReadError: ")
        err = err.__cause__ or err.__context__
    return None


def run_job(cfg: JobConfig) -> JobResult:
    """Run (or resume) a job to the end. Raises ``JobError`` on fatal problems."""
    started, started_at = time.perf_counter(), _now()
    task = build_task(cfg.task)
    params = cfg.sampling_params()
    rows_per_file = cfg.output.rows_per_file
    in_loc = Location.of(cfg.input.path, cfg.input.storage)
    out_loc = Location.of(cfg.output.path, cfg.output_storage())
    layout = OutputLayout(out_loc)
    check_checkpoint(cfg)

    try:
        if cfg.job.resume:
            manifest = layout.read_manifest()
            strays = layout.part_files() if manifest is None else []
        else:
            manifest, strays, removed = None, [], layout.clear()
            if removed:
                logger.warning("job.resume=false: deleted the earlier run in %s (%d part files)", out_loc.uri,
                               removed)
    except StorageError as err:
        raise JobError(f"output.path: {err}") from None
    if manifest is not None:
        _check_resume(cfg, manifest, out_loc.uri)
    if strays:
        raise JobError(f"output.path: {out_loc.uri} already holds part files ({len(strays)}) but no "
                       "_redraft/manifest.json, so they cannot be resumed safely. Use another output.path, or set "
                       "job.resume=false to delete them and start over.")
    skipped: list[str] = []
    try:
        def plan():
            skipped.clear()  # a retried plan lists them again
            return plan_inputs(in_loc, cfg.input, rows_per_file, manifest.get("files") if manifest else None,
                               task.extra_columns(), task.reads_text, skipped)

        files = retry_reads(plan, in_loc.attempts)
    except StorageError as err:
        raise JobError(f"input.path: {err}") from None
    except InputPlanError as err:
        raise JobError(str(err)) from None
    if manifest is not None:
        before = {(f["path"], f["num_rows"]) for f in manifest.get("files", [])}
        if before != {(f.path, f.num_rows) for f in files}:
            raise JobError(f"input.path: the input changed since the earlier run in {out_loc.uri} (files or row "
                           "counts differ). Use another output.path, or set job.resume=false to start over.")
    try:
        layout.write_manifest(_manifest(cfg, files))
        layout.clean_temporaries()
        shards = make_shards(files, rows_per_file)
        done, staged = layout.scan({s.key for s in shards})
    except StorageError as err:
        raise JobError(f"output.path: {err}") from None

    if skipped:
        logger.warning("input.path: %d files are not read: %s%s", len(skipped), ", ".join(skipped[:10]),
                       " ..." if len(skipped) > 10 else "")
    rows_total = sum(s.num_rows for s in shards)
    rows_resumed = _rows_staged(shards, done, staged)
    console.announce(f"job {cfg.job.name}: {rows_total:,} rows in {len(files)} input files -> {len(shards)} "
                     f"output files; {rows_resumed:,} done earlier, {rows_total - rows_resumed:,} to generate")
    this_run, attempts = Counter(), 1
    if any(s.key not in done for s in shards):
        _init_ray(cfg)
        attempts = _run_attempts(cfg, task, params, in_loc, out_loc, shards, done, staged, this_run)
    try:
        summary = _finish(cfg, layout, shards, this_run, rows_resumed, started, started_at, params)
    except StorageError as err:
        raise JobError(storage_stop_message(str(err), out_loc, rows_resumed + this_run["rows"],
                                            "the final summary")) from None
    summary["skipped_files"] = skipped
    summary["attempts"] = attempts
    exit_code, message = 0, ""
    if summary["error_fraction"] > cfg.job.max_error_fraction:
        exit_code = 1
        message = (f"{summary['rows_error']} of {summary['rows_total']} rows are errors "
                   f"({summary['error_fraction']:.1%}), more than job.max_error_fraction "
                   f"({cfg.job.max_error_fraction:.1%})")
    summary["status"] = "ok" if exit_code == 0 else "failed"
    summary["message"] = message
    try:
        layout.write_summary(summary)
    except StorageError as err:
        raise JobError(storage_stop_message(str(err), out_loc, summary["rows_total"], "the final summary")) from None
    return JobResult(summary, exit_code, message)


def _rows_staged(shards, done: set[str], staged: dict[str, set[int]]) -> int:
    return sum(s.num_rows for s in shards if s.key in done) + sum(len(v) for v in staged.values())


def _run_attempts(cfg, task, params, in_loc, out_loc, shards, done, staged, counts: Counter) -> int:
    """Run the pending shards; when Ray loses a node, actor or object for good, run again from the staging (only
    the rows not staged yet), up to ``job.max_attempts`` runs in all. Returns the number of runs."""
    layout, most = OutputLayout(out_loc), cfg.job.max_attempts
    for attempt in range(1, most + 1):
        pending = [s for s in shards if s.key not in done]
        to_read = [s for s in pending if len(staged.get(s.key, ())) < s.num_rows]
        try:
            _execute(cfg, task, params, in_loc, out_loc, pending, to_read, staged, counts)
            return attempt
        except LostCapacity as err:
            if attempt == most:
                raise JobError(f"the job stopped after {most} attempt{'s' if most > 1 else ''} "
                               f"(job.max_attempts): {err.cause}\n{RESUME_HINT}") from err
            try:
                done, staged = layout.scan({s.key for s in shards})
            except StorageError as scan_err:
                raise JobError(storage_stop_message(str(scan_err), out_loc, counts["rows"])) from None
            logger.warning("attempt %d/%d after %s; resuming from %d staged rows", attempt + 1, most, err.cause,
                           _rows_staged(shards, done, staged))
    raise AssertionError("unreachable")


def _finish(cfg, layout: OutputLayout, shards, this_run: Counter, rows_resumed: int, started: float,
            started_at: str, params) -> dict:
    """Check every part file is there, drop the staging folder, and build the summary (StorageError passes)."""
    out_loc = layout.loc
    missing = [s.key for s in shards if out_loc.info(layout.part_path(s.key)).type != pafs.FileType.File]
    if missing:
        raise JobError(f"{len(missing)} output files were not completed ({', '.join(missing[:5])}...); "
                       "run the same command again to finish them")
    try:  # every shard has its part file: no staged rows remain; a leftover folder is removed by the next run
        out_loc.delete_dir(out_loc.join(STAGING))
    except StorageError as err:
        logger.warning("could not remove the staging folder (the output is complete): %s", err)
    wall = time.perf_counter() - started
    return _summarize(cfg, out_loc, shards, this_run, rows_resumed, wall, started_at, params)


def _engine_stage(ds, cfg: JobConfig, task, params, res: dict):
    """The actor pool: one ``RedraftBatchWorker`` (one engine) per actor; for engine.backend 'vllm', Ray's vLLM
    processor (``workers.vllm_worker``)."""
    from ray.data import ActorPoolStrategy

    if cfg.engine.backend == "vllm":
        from workers.vllm_worker import vllm_stage

        from .convert import vllm_stage_settings

        return vllm_stage(ds, vllm_stage_settings(cfg), task, params, res)

    c = res["concurrency"]
    pool = ActorPoolStrategy(min_size=c[0], max_size=c[1]) if isinstance(c, tuple) else ActorPoolStrategy(size=c)
    return ds.map_batches(
        RedraftBatchWorker, batch_size=cfg.workers.batch_size, batch_format="pyarrow",
        fn_constructor_kwargs=dict(
            checkpoint=str(Path(cfg.engine.checkpoint).expanduser().resolve()), task=task, params=params,
            device=cfg.engine.device, dtype=cfg.engine.dtype, quantization=cfg.engine.quantization,
            max_input_chars=cfg.task.char_limit(),
            num_threads=max(1, int(res["num_cpus"])), job_name=cfg.job.name,
            max_inflight=cfg.workers.max_inflight, batch_invariant=cfg.engine.batch_invariant),
        compute=pool, num_gpus=res["num_gpus"], num_cpus=res["num_cpus"],
        max_restarts=cfg.workers.max_restarts, max_task_retries=cfg.workers.max_task_retries,
        udf_modifying_row_count=False)


def _execute(cfg, task, params, in_loc, out_loc, pending, to_read, staged, counts: Counter) -> None:
    """Generate the rows not yet staged and compact every pending shard, adding this run's row figures to
    ``counts``. Raises ``LostCapacity`` when Ray lost a node, actor or object and gave up."""
    import ray
    from ray.data import DataContext

    res = _resources(cfg)
    console.announce(f"job {cfg.job.name}: starting {res['concurrency']} engine actor(s) with {res['num_cpus']:g} "
                     f"CPU and {res['num_gpus']:g} GPU each (model load), {cfg.workers.batch_size} rows per batch")
    ctx = DataContext.get_current()
    ctx.max_errored_blocks = 0  # a block that fails after its retries fails the job (rows are never dropped)
    console.quiet_ray_data(ctx)
    compact = ray.remote(num_cpus=0.1, max_retries=3)(compact_shard)
    remaining = {s.key: s.num_rows - len(staged.get(s.key, ())) for s in pending}
    bounds = {s.key: (s.start, s.end) for s in pending}
    refs = {}
    staged_before = sum(len(v) for v in staged.values())

    def submit(key):
        if key not in refs:
            refs[key] = compact.remote(out_loc, key, *bounds[key])

    for key, left in remaining.items():
        if left <= 0:
            submit(key)
    if to_read:
        try:
            _stream(cfg, task, params, in_loc, out_loc, to_read, staged, res, remaining, counts, submit)
        except Exception as err:  # noqa: BLE001 - Ray wraps worker failures; report them briefly
            ray.wait(list(refs.values()), num_returns=len(refs), timeout=120)  # no compaction left running
            _raise_stopped(err, out_loc, staged_before + counts["rows"])
    for key in remaining:  # safety net: compaction checks the rows itself
        submit(key)
    try:
        compacted = ray.get(list(refs.values()))
    except Exception as err:  # noqa: BLE001 - a compaction task's failure, wrapped by Ray
        _raise_stopped(err, out_loc, staged_before + counts["rows"], "compaction")
    for r in compacted:
        if r.get("cleanup_error"):
            logger.warning("output file %s is written, but its staging folder was not removed (the next run removes "
                           "it): %s", r["key"], r["cleanup_error"])
        logger.info("output file %s: %d rows%s", r["key"], r["rows"], f", {r['missing']} missing" if r["missing"] else "")
    incomplete = [r for r in compacted if r["missing"]]
    if incomplete:
        lost = sum(r["missing"] for r in incomplete)
        raise JobError(f"{lost} rows of {len(incomplete)} output files were not generated "
                       f"(first: {incomplete[0]['key']}); run the same command again to finish them")


def _stream(cfg, task, params, in_loc, out_loc, to_read, staged, res, remaining, counts, submit) -> None:
    """The Ray Data pipeline read -> engine -> stage, consumed here; each shard is compacted once staged."""
    import ray

    source = make_datasource(in_loc, to_read, cfg.input, staged, cfg.output.rows_per_file,
                             tuple(task.extra_columns().values()), task.reads_text)
    ds = ray.data.read_datasource(source, num_cpus=0.25)
    with warnings.catch_warnings():
        # Ray 2.60 deprecates free-form remote args, but max_restarts / max_task_retries have no named
        # parameter yet; they are the documented way to bound retries of a dead actor's batches.
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = _engine_stage(ds, cfg, task, params, res)
    ds = ds.map_batches(stage_batch, batch_size=None, batch_format="pyarrow", fn_kwargs={"loc": out_loc},
                        num_cpus=0.1)
    progress = console.RowProgress(sum(remaining.values()), f"job {cfg.job.name}")
    try:
        for receipts in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for r in receipts.to_pylist():
                counts.update({k: r[k] for k in ("rows", "ok", "error", "output_tokens", "passes", "engine_seconds")})
                progress.update(r["rows"], r["ok"], r["error"])
                logger.info("staged %d row(s) of %s (%d ok, %d error)", r["rows"], r["shard"], r["ok"], r["error"])
                remaining[r["shard"]] -= r["rows"]
                if remaining[r["shard"]] <= 0:
                    submit(r["shard"])
    finally:
        progress.close()


def _raise_stopped(err: BaseException, out_loc, rows_there: int, where: str = ""):
    """Turn what stopped the Ray part of the job into ``LostCapacity`` (to run again) or a ``JobError``."""
    unreadable = _input_read_error(err)
    if unreadable is not None:
        raise JobError(unreadable) from err
    cause = storage_cause(err) or _root_cause(err)
    if storage_failed(err):
        raise JobError(storage_stop_message(cause, out_loc, rows_there, where)) from err
    if lost_capacity(err):
        raise LostCapacity(cause) from err
    during = f" during {where}" if where else ""
    raise JobError(f"the job stopped{during}: {cause}\n{RESUME_HINT}") from err


def _summarize(cfg, out_loc, shards, this_run: Counter, rows_resumed: int, wall: float, started_at: str,
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
        "finished_at": _now(),
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
