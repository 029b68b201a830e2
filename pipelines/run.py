"""``run_job``: read -> worker (engine) -> stage -> compact -> summary, on Ray Data.

Fatal problems (no input, checkpoint missing, output not writable, a resume that does not match the earlier
run) raise ``JobError`` before any work starts. Bad rows never do: they are error rows, and the job only fails
at the end when their fraction exceeds ``job.max_error_fraction``.

``run_job`` reads top-down as one job's steps: the output's resume state, the input plan, the shards, the
generation (``_generate``: Ray Data read -> engine actors -> stage, each shard compacted once staged), the
summary. Beside it: ``preflight`` (the checkpoint check), ``cluster`` (Ray, actor resources, SIGTERM),
``recovery`` (``JobError``, running again after lost capacity) and ``summary`` (summary.json and its table).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from workers.batch import RedraftBatchWorker

from . import console
from .cluster import Terminated, actor_resources, handle_sigterm, init_ray  # noqa: F401 - the CLI's names
from .config import JobConfig
from .convert import build_task
from .inputs import InputPlanError, make_datasource, make_shards, plan_inputs
from .output import STAGING, OutputLayout, compact_shard, stage_batch
from .preflight import check_checkpoint
from .recovery import JobError, raise_stopped, rows_staged, run_attempts, storage_stop_message
from .storage import Location, StorageError, retry_reads
from .summary import format_summary, now_utc, summarize  # noqa: F401 - format_summary: the CLI's name

logger = logging.getLogger("redraft")


@dataclass
class JobResult:
    summary: dict
    exit_code: int  # 0 ok, 1 error fraction exceeded
    message: str = ""


def run_job(cfg: JobConfig) -> JobResult:
    """Run (or resume) a job to the end. Raises ``JobError`` on fatal problems."""
    started, started_at = time.perf_counter(), now_utc()
    task = build_task(cfg.task)
    params = cfg.sampling_params()
    in_loc = Location.of(cfg.input.path, cfg.input.storage)
    out_loc = Location.of(cfg.output.path, cfg.output_storage())
    layout = OutputLayout(out_loc)
    check_checkpoint(cfg)

    manifest = _open_output(cfg, layout)
    files, skipped = _plan_files(cfg, task, in_loc, manifest, out_loc.uri)
    shards, done, staged = _start_output(cfg, layout, files)
    rows_resumed = _announce(cfg, files, shards, done, staged, skipped)
    this_run, attempts = Counter(), 1
    if any(s.key not in done for s in shards):
        init_ray(cfg)
        attempts = _generate(cfg, task, params, in_loc, layout, shards, done, staged, this_run)
    try:
        summary = _finish(cfg, layout, shards, this_run, rows_resumed, started, started_at, params)
    except StorageError as err:
        raise JobError(storage_stop_message(str(err), out_loc, rows_resumed + this_run["rows"],
                                            "the final summary")) from None
    return _conclude(cfg, layout, summary, skipped, attempts)


def _open_output(cfg: JobConfig, layout: OutputLayout) -> dict | None:
    """The earlier run's manifest when resuming (checked against this config), else a cleared output."""
    out_loc = layout.loc
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
    return manifest


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


def _plan_files(cfg: JobConfig, task, in_loc: Location, manifest: dict | None, out_uri: str):
    """The input files and their row counts (the same as the earlier run's when resuming), and the files of the
    input folder that are not read."""
    skipped: list[str] = []
    try:
        def plan():
            skipped.clear()  # a retried plan lists them again
            return plan_inputs(in_loc, cfg.input, cfg.output.rows_per_file,
                               manifest.get("files") if manifest else None, task.extra_columns(), task.reads_text,
                               skipped)

        files = retry_reads(plan, in_loc.attempts)
    except StorageError as err:
        raise JobError(f"input.path: {err}") from None
    except InputPlanError as err:
        raise JobError(str(err)) from None
    if manifest is not None:
        before = {(f["path"], f["num_rows"]) for f in manifest.get("files", [])}
        if before != {(f.path, f.num_rows) for f in files}:
            raise JobError(f"input.path: the input changed since the earlier run in {out_uri} (files or row "
                           "counts differ). Use another output.path, or set job.resume=false to start over.")
    return files, skipped


def _start_output(cfg: JobConfig, layout: OutputLayout, files):
    """Write the manifest, cut the input into shards (one output file each), and find what is done or staged."""
    try:
        layout.write_manifest(_manifest(cfg, files))
        layout.clean_temporaries()
        shards = make_shards(files, cfg.output.rows_per_file)
        done, staged = layout.scan({s.key for s in shards})
    except StorageError as err:
        raise JobError(f"output.path: {err}") from None
    return shards, done, staged


def _manifest(cfg: JobConfig, files) -> dict:
    return {"format": 1, "job": cfg.job.name, "fingerprint": cfg.fingerprint(),
            "fingerprint_fields": cfg.fingerprint_fields(), "files": [f.to_dict() for f in files],
            "updated_at": now_utc()}


def _announce(cfg: JobConfig, files, shards, done, staged, skipped: list[str]) -> int:
    """Log the skipped files and announce the job's rows; returns the rows done in earlier runs."""
    if skipped:
        logger.warning("input.path: %d files are not read: %s%s", len(skipped), ", ".join(skipped[:10]),
                       " ..." if len(skipped) > 10 else "")
    rows_total = sum(s.num_rows for s in shards)
    rows_resumed = rows_staged(shards, done, staged)
    console.announce(f"job {cfg.job.name}: {rows_total:,} rows in {len(files)} input files -> {len(shards)} "
                     f"output files; {rows_resumed:,} done earlier, {rows_total - rows_resumed:,} to generate")
    return rows_resumed


def _generate(cfg: JobConfig, task, params, in_loc: Location, layout: OutputLayout, shards, done, staged,
              counts: Counter) -> int:
    """Generate and compact the shards not done, run again after lost capacity (``recovery.run_attempts``);
    returns the number of runs."""
    def execute(pending, to_read, staged_now):
        _execute(cfg, task, params, in_loc, layout.loc, pending, to_read, staged_now, counts)

    return run_attempts(execute, layout, shards, done, staged, counts, cfg.job.max_attempts)


def _execute(cfg, task, params, in_loc, out_loc, pending, to_read, staged, counts: Counter) -> None:
    """Generate the rows not yet staged and compact every pending shard, adding this run's row figures to
    ``counts``. Raises ``LostCapacity`` when Ray lost a node, actor or object and gave up."""
    import ray
    from ray.data import DataContext

    res = actor_resources(cfg)
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
            raise_stopped(err, out_loc, staged_before + counts["rows"])
    for key in remaining:  # safety net: compaction checks the rows itself
        submit(key)
    try:
        compacted = ray.get(list(refs.values()))
    except Exception as err:  # noqa: BLE001 - a compaction task's failure, wrapped by Ray
        raise_stopped(err, out_loc, staged_before + counts["rows"], "compaction")
    _check_compacted(compacted)


def _check_compacted(compacted: list[dict]) -> None:
    """Log each compacted output file; a shard with rows missing fails the job (a rerun finishes it)."""
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
    return summarize(cfg, out_loc, shards, this_run, rows_resumed, wall, started_at, params)


def _conclude(cfg: JobConfig, layout: OutputLayout, summary: dict, skipped: list[str], attempts: int) -> JobResult:
    """The job's status (failed when too many rows are errors), written to summary.json."""
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
        raise JobError(storage_stop_message(str(err), layout.loc, summary["rows_total"],
                                            "the final summary")) from None
    return JobResult(summary, exit_code, message)
