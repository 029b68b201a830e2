"""``num_self_corrections`` reaches the output rows: the engine's count, and 0 for rows staged before the column
existed (a resume across an upgrade)."""

from __future__ import annotations

import posixpath

import pyarrow as pa

from pipelines.output import compact_shard
from pipelines.storage import Location
from workers.batch import OUTPUT_SCHEMA, STAGED_SCHEMA


def test_rows_staged_without_the_column_compact_with_zero(tmp_path):
    from pipelines.output import OutputLayout

    loc = Location.of(str(tmp_path / "out"), None)
    layout = OutputLayout(loc)
    key = "part-00000-000000000"
    old = [f for f in STAGED_SCHEMA if f.name != "num_self_corrections"]
    table = pa.table({"id": ["a", "b"], "status": ["ok", "ok"], "error": [None, None], "output": ["x", "y"],
                      "num_output_tokens": [1, 2], "num_passes": [1, 1], "tokens_per_pass": [1.0, 2.0],
                      "seconds": [0.1, 0.2], "model": ["m", "m"], "sampling_hash": ["h", "h"],
                      "__shard": [key, key], "__row": [0, 1]}, schema=pa.schema(old))
    loc.write_parquet(posixpath.join(layout.staging_dir(key), "rows-000000000-000000001-old.parquet"), table)
    assert compact_shard(loc, key, 0, 2) == {"key": key, "rows": 2, "missing": 0}
    out = loc.read_parquet(layout.part_path(key))
    assert out.schema == OUTPUT_SCHEMA
    assert out.column("num_self_corrections").to_pylist() == [0, 0]
    assert out.column("output").to_pylist() == ["x", "y"]


def test_worker_rows_carry_the_engines_corrections(tiny_checkpoint):
    from pipelines.config import validate_config

    cfg = validate_config({"input": {"path": "in.jsonl"}, "output": {"path": "out"},
                           "engine": {"checkpoint": str(tiny_checkpoint), "device": "cpu"},
                           "sampling": {"max_new_tokens": 16, "max_denoising_steps": 6, "entropy_bound": 5.0}})
    from pipelines.convert import build_task
    from workers.batch import RedraftBatchWorker, row_seed

    worker = RedraftBatchWorker(str(tiny_checkpoint), build_task(cfg.task), cfg.sampling_params(), device="cpu")
    batch = pa.table({"__id": ["r0", "r1"], "__text": ["hello there", "a b c"], "__input_error": [None, None],
                      "__shard": ["s", "s"], "__row": [0, 1]})
    rows = worker(batch).to_pylist()
    plans = [worker.task.plan({"text": t}) for t in ("hello there", "a b c")]
    direct = worker.task.execute(worker.engine, plans, worker.params, [row_seed(0, i) for i in ("r0", "r1")])
    assert [r["num_self_corrections"] for r in rows] == [d.num_self_corrections for d in direct]
    assert sum(r["num_self_corrections"] for r in rows) > 0  # a random model revises what it accepted
