"""Input planning and shard reading, and the output directory's staging and compaction (no Ray here)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from pipelines.config import InputConfig
from pipelines.inputs import InputPlanError, iter_lines, make_shards, plan_inputs, read_shard
from pipelines.output import OutputLayout, compact_shard, stage_batch
from pipelines.storage import Location
from tests.pipeline_fixtures import write_jsonl, write_parquet
from workers.batch import OUTPUT_SCHEMA, STAGED_SCHEMA


def plan(path, rows_per_file=3, **cfg):
    icfg = InputConfig(path=str(path), **cfg)
    loc = Location.of(str(path), None)
    files = plan_inputs(loc, icfg, rows_per_file)
    return loc, icfg, files, make_shards(files, rows_per_file)


def read_all(loc, icfg, shards, rows_per_file=3, skip=None):
    tables = [read_shard(loc, s, icfg, frozenset((skip or {}).get(s.key, ())), rows_per_file) for s in shards]
    return pa.concat_tables(tables).to_pylist()


def test_iter_lines_offsets_across_chunks():
    import io

    import pipelines.inputs as inputs

    data = b"a\n\nbbb\ncc" + b"x" * 10 + b"\nlast"
    old = inputs._CHUNK
    inputs._CHUNK = 4  # lines straddle chunk boundaries
    try:
        got = list(iter_lines(io.BytesIO(data)))
    finally:
        inputs._CHUNK = old
    assert [line for _, line in got] == data.split(b"\n")
    assert all(data[off:off + len(line)] == line for off, line in got)


def test_jsonl_rows_ids_and_row_errors(tmp_path):
    rows = [{"id": "a", "text": "one"}, {"id": "b", "text": ""}, {"id": "c", "text": None}, {"id": 4, "text": 7},
            {"id": None, "text": "no id"}, {"text": "missing id field"}, {"id": "g"}, [1, 2]]
    path = write_jsonl(tmp_path / "in.jsonl", rows, extra_lines=["", "{broken", '{"id": "z", "text": "last"}'])
    loc, icfg, files, shards = plan(path, id_column="id")
    assert files[0].num_rows == 10  # the blank line is not a row
    assert [s.key for s in shards] == ["part-00000-000000000", "part-00000-000000003", "part-00000-000000006",
                                       "part-00000-000000009"]
    got = read_all(loc, icfg, shards)
    assert [r["__row"] for r in got] == list(range(10))
    by_row = {r["__row"]: r for r in got}
    assert (by_row[0]["__id"], by_row[0]["__text"], by_row[0]["__input_error"]) == ("a", "one", None)
    assert by_row[1]["__text"] == "" and by_row[1]["__input_error"] is None  # the worker says "text is empty"
    assert by_row[2]["__text"] is None and by_row[2]["__input_error"] is None  # ... and "text is null"
    assert by_row[3]["__id"] == "4" and "holds a JSON int, not a string" in by_row[3]["__input_error"]
    assert by_row[4]["__id"] == "in.jsonl:4" and "id column 'id' is empty" in by_row[4]["__input_error"]
    assert by_row[5]["__id"] == "in.jsonl:5"
    assert by_row[6]["__input_error"] == "row has no field 'text'"
    assert by_row[7]["__input_error"] == "line is a JSON list, not an object"
    assert by_row[8]["__id"] == "in.jsonl:8" and by_row[8]["__input_error"].startswith("line is not valid JSON")
    assert by_row[9]["__id"] == "z" and by_row[9]["__text"] == "last"
    # rows already done are skipped, the others keep their row numbers
    again = read_all(loc, icfg, shards, skip={"part-00000-000000000": {0, 2}, "part-00000-000000009": {9}})
    assert [r["__row"] for r in again] == [1, 3, 4, 5, 6, 7, 8]


def test_parquet_folder_row_groups_and_stable_ids(tmp_path):
    write_parquet(tmp_path / "in" / "b.parquet", {"text": [f"b{i}" for i in range(7)]}, row_group_size=2)
    write_parquet(tmp_path / "in" / "a" / "x.parquet", {"text": ["a0", None], "n": [1, 2]})
    write_parquet(tmp_path / "in" / "_hidden.parquet", {"text": ["skip me"]})
    (tmp_path / "in" / ".tmp.parquet").write_text("not parquet")
    (tmp_path / "in" / "notes.txt").write_text("ignored")
    loc, icfg, files, shards = plan(tmp_path / "in")
    assert [(f.name, f.num_rows) for f in files] == [("a/x.parquet", 2), ("b.parquet", 7)]
    got = read_all(loc, icfg, shards)
    assert [r["__id"] for r in got] == ["a/x.parquet:0", "a/x.parquet:1"] + [f"b.parquet:{i}" for i in range(7)]
    assert [r["__text"] for r in got] == ["a0", None] + [f"b{i}" for i in range(7)]
    assert {r["__shard"] for r in got} == {s.key for s in shards}
    # a glob, and the same ids relative to the glob's folder
    _, _, gfiles, _ = plan(tmp_path / "in" / "*.parquet")
    assert [f.name for f in gfiles] == ["b.parquet"]


def test_parquet_non_string_text_column_gives_error_rows(tmp_path):
    path = write_parquet(tmp_path / "n.parquet", {"id": [1, None, 3], "text": [5, None, 6]})
    loc, icfg, _, shards = plan(path, id_column="id")
    got = read_all(loc, icfg, shards)
    assert [r["__id"] for r in got] == ["1", "n.parquet:1", "3"]
    assert "holds int64, not strings" in got[0]["__input_error"]
    assert "id column 'id' is empty" in got[1]["__input_error"]  # null text, null id: the id problem is named


def test_planning_fails_fast_with_the_field(tmp_path):
    path = write_parquet(tmp_path / "p.parquet", {"body": ["x"]})
    with pytest.raises(InputPlanError, match=r"input.text_column: column 'text' is not in .*columns: body"):
        plan(path)
    with pytest.raises(InputPlanError, match="input.id_column: column 'doc' is not in"):
        plan(path, text_column="body", id_column="doc")
    j = write_jsonl(tmp_path / "j.jsonl", [{"body": "x"}])
    with pytest.raises(InputPlanError, match=r"input.text_column: no field 'text' in the first rows.*fields: body"):
        plan(j)
    with pytest.raises(InputPlanError, match="input.path: .* does not exist"):
        plan(tmp_path / "missing")
    with pytest.raises(InputPlanError, match="input.path: no files match"):
        plan(tmp_path / "*.csv")
    (tmp_path / "data.txt").write_text("{}")
    with pytest.raises(InputPlanError, match="input.format: cannot tell the format"):
        plan(tmp_path / "data.txt")
    assert plan(tmp_path / "data.txt", format="jsonl")[2][0].format == "jsonl"


def _staged(shard, rows, status="ok"):
    n = len(rows)
    return pa.table({
        "id": [f"id{r}" for r in rows], "status": [status] * n, "error": [None] * n, "output": [f"o{r}" for r in rows],
        "num_output_tokens": [3] * n, "num_passes": [2] * n, "tokens_per_pass": [1.5] * n,
        "num_self_corrections": [0] * n, "seconds": [0.1] * n,
        "model": ["m"] * n, "sampling_hash": ["h"] * n, "__shard": [shard] * n, "__row": rows,
    }, schema=STAGED_SCHEMA)


def test_staging_is_idempotent_and_compaction_exactly_once(tmp_path):
    loc = Location.of(str(tmp_path / "out"), None)
    layout = OutputLayout(loc)
    key = "part-00000-000000010"
    batch = pa.concat_tables([_staged(key, [10, 11, 12]), _staged("part-00000-000000013", [13])])
    receipts = stage_batch(batch, loc).to_pylist()
    assert [(r["shard"], r["rows"], r["output_tokens"]) for r in receipts] == [(key, 3, 9),
                                                                               ("part-00000-000000013", 1, 3)]
    stage_batch(batch, loc)  # a retried batch rewrites the same files
    assert len(loc.list_files(layout.staging_dir(key))) == 1
    stage_batch(_staged(key, [11, 12]), loc)  # the same rows again in another split: kept once
    assert compact_shard(loc, key, 10, 14) == {"key": key, "rows": 3, "missing": 1}  # row 13 is absent
    assert not (tmp_path / "out" / f"{key}.parquet").exists()
    stage_batch(_staged(key, [13]), loc)
    assert compact_shard(loc, key, 10, 14) == {"key": key, "rows": 4, "missing": 0}
    table = loc.read_parquet(layout.part_path(key))
    assert table.schema == OUTPUT_SCHEMA
    assert table.column("id").to_pylist() == ["id10", "id11", "id12", "id13"]
    assert not loc.list_files(layout.staging_dir(key))
    done, staged = layout.scan({key, "part-00000-000000013"})
    assert done == {key} and staged == {"part-00000-000000013": {13}}


def test_manifest_and_clear(tmp_path):
    loc = Location.of(str(tmp_path / "out"), None)
    layout = OutputLayout(loc)
    assert layout.read_manifest() is None
    layout.write_manifest({"fingerprint": "abc"})
    assert layout.read_manifest() == {"fingerprint": "abc"}
    (tmp_path / "out" / "part-00000-000000000.parquet").write_bytes(b"x")
    (tmp_path / "out" / "keep.txt").write_text("not ours")
    (tmp_path / "out" / ".part-1.parquet.tmp-abc").write_text("half written")
    layout.clean_temporaries()
    assert not (tmp_path / "out" / ".part-1.parquet.tmp-abc").exists()
    assert layout.clear() == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep.txt"]
    (tmp_path / "out" / "_redraft").mkdir()
    (tmp_path / "out" / "_redraft" / "manifest.json").write_text("{oops")
    with pytest.raises(Exception, match="not valid JSON"):
        layout.read_manifest()
    json.dumps(layout.loc.uri)
