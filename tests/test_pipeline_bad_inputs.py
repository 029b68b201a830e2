"""One bad value never stops a job: undecodable values become error rows naming the column, file and row; a
file that cannot be read at all is one clear error naming it. The files are built for real, bytes and all."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.config import InputConfig
from pipelines.inputs import InputReadError, make_shards, plan_inputs, read_shard
from pipelines.storage import Location
from tests.pipeline_fixtures import corrupt_parquet_page, ray_cluster, raw_string_array, write_jsonl  # noqa: F401

LONE = '"a \\ud800 b"'  # the JSON escape of a lone surrogate: valid JSON, not valid Unicode


def read(path, rows_per_file=4, extra=(), **cfg):
    icfg = InputConfig(path=str(path), **cfg)
    loc = Location.of(str(path), None)
    files = plan_inputs(loc, icfg, rows_per_file, columns={f"task.{c}": c for c in extra})
    shards = make_shards(files, rows_per_file)
    return [r for s in shards for r in read_shard(loc, s, icfg, frozenset(), rows_per_file, extra).to_pylist()]


def test_lone_surrogates_and_invalid_utf8_in_jsonl_are_error_rows(tmp_path):
    lines = [b'{"id": "a", "text": "fine"}', b'{"id": "b", "text": ' + LONE.encode() + b'}',
             b'{"id": ' + LONE.encode() + b', "text": "bad id"}', b'{"id": "d", "text": "caf\xe9"}',  # Latin-1
             b'{"id": "e", "text": "also fine"}']
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    got = read(path, id_column="id")
    assert [r["__id"] for r in got] == ["a", "b", "in.jsonl:2", "in.jsonl:3", "e"]
    assert [r["__input_error"] is None for r in got] == [True, False, False, False, True]
    assert got[1]["__input_error"] == ("text field 'text' is not valid Unicode (a lone surrogate '\\ud800' at "
                                       "character 2) (in.jsonl, row 1)")
    assert got[1]["__text"] is None
    assert got[2]["__input_error"].startswith("id column 'id' is not valid Unicode (a lone surrogate")
    assert got[2]["__input_error"].endswith("(it was given the id 'in.jsonl:2') (in.jsonl, row 2)")
    assert got[3]["__input_error"] == "line is not valid UTF-8 (byte 0xe9 at byte 24) (in.jsonl, row 3)"
    assert got[4]["__text"] == "also fine"


def test_lone_surrogate_in_an_extra_column_and_deep_nesting(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"id": "a", "text": "t", "prefix": "p"}],
                       extra_lines=['{"id": "b", "text": "t", "prefix": ' + LONE + '}', "[" * 100_000 + "]" * 100_000])
    got = read(path, extra=("prefix",), id_column="id")
    assert json.loads(got[0]["__extra"]) == {"prefix": "p"}
    assert got[1]["__input_error"].startswith("column 'prefix' is not valid Unicode (a lone surrogate")
    assert got[1]["__extra"] is None
    assert got[2]["__input_error"] == "line is nested too deeply to decode (x.jsonl, row 2)"


def test_invalid_utf8_and_undecodable_values_in_parquet_are_error_rows(tmp_path):
    texts = raw_string_array([b"ok 0", b"bad \xff\xfe", None, b"ok 3", b"ok 4"])
    ids = raw_string_array([b"r0", b"r1", b"r2", b"r\xc3", b"r4"])
    when = pa.array([0, 0, 10**12, 0, 0], pa.timestamp("s"))  # year 33658: Python's datetime cannot hold it
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": ids, "text": texts, "when": when}), path, store_schema=False, row_group_size=2)
    got = read(path, id_column="id")
    assert [r["__id"] for r in got] == ["r0", "r1", "r2", "p.parquet:3", "r4"]
    assert got[0]["__text"] == "ok 0" and got[0]["__input_error"] is None
    assert got[1]["__input_error"] == "text column 'text' is not valid UTF-8 (byte 0xff at byte 4) (p.parquet, row 1)"
    assert got[2]["__input_error"] is None and got[2]["__text"] is None  # null text: the worker says 'text is null'
    assert got[3]["__input_error"].startswith("id column 'id' is not valid UTF-8 (byte 0xc3 at byte 1)")
    assert got[4]["__text"] == "ok 4"
    rows = read(path, extra=("when",), id_column="id")
    assert rows[2]["__input_error"].startswith("column 'when' cannot be decoded (OverflowError: date value out")
    assert rows[2]["__input_error"].endswith("(p.parquet, row 2)")
    assert rows[0]["__input_error"] == "column 'when' holds a datetime value, not text, a number or a list"


def test_a_damaged_parquet_page_names_the_file_and_row_groups(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": [f"row {i} " * 20 for i in range(16)]}), path, row_group_size=4)
    corrupt_parquet_page(path, row_group=2)
    icfg = InputConfig(path=str(path))
    loc = Location.of(str(path), None)
    shards = make_shards(plan_inputs(loc, icfg, 4), 4)  # the footer is intact: planning works
    assert [len(read_shard(loc, s, icfg, frozenset(), 4)) for s in shards[:2]] == [4, 4]
    with pytest.raises(InputReadError, match=rf"input.path: {path} is damaged: cannot read row groups 2-2 "
                       r"\(rows 8-11\): OSError: Couldn't deserialize thrift.*Replace or remove the file"):
        read_shard(loc, shards[2], icfg, frozenset(), 4)


# ------------------------------------------------------------------------------------------------ whole jobs

@pytest.mark.slow
def test_job_with_poisoned_values_finishes_with_error_rows(tmp_path, tiny_checkpoint, ray_cluster):
    from pipelines.config import validate_config
    from pipelines.run import run_job
    from tests.pipeline_fixtures import job_config, prompts, read_output

    src = tmp_path / "in"
    write_jsonl(src / "a.jsonl", prompts(3, "j"), extra_lines=['{"id": "j-lone", "text": ' + LONE + '}'])
    pq.write_table(pa.table({"id": ["p-0", "p-bad", "p-2"],
                             "text": raw_string_array([b"Once upon", b"caf\xe9", b"The end"])}),
                   src / "b.parquet", store_schema=False)
    (src / "c.csv").write_text("id,text\n")
    result = run_job(validate_config(job_config(tiny_checkpoint, src, tmp_path / "out")))
    assert result.exit_code == 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["skipped_files"] == ["c.csv (unknown extension)"]
    rows = {r["id"]: r for r in read_output(tmp_path / "out")}
    assert len(rows) == 7
    assert rows["j-lone"]["status"] == "error" and "a.jsonl, row 3" in rows["j-lone"]["error"]
    assert rows["p-bad"]["status"] == "error" and "not valid UTF-8" in rows["p-bad"]["error"]
    assert all(rows[k]["status"] == "ok" for k in ("j-0", "j-1", "j-2", "p-0", "p-2"))


@pytest.mark.slow
def test_job_on_a_damaged_parquet_file_stops_naming_it(tmp_path, tiny_checkpoint, ray_cluster):
    from pipelines.config import validate_config
    from pipelines.run import JobError, run_job
    from tests.pipeline_fixtures import job_config

    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(16)], "text": [f"Story {i} began" for i in range(16)]}),
                   path, row_group_size=8)
    corrupt_parquet_page(path, row_group=1, column=1)
    with pytest.raises(JobError) as info:
        run_job(validate_config(job_config(tiny_checkpoint, path, tmp_path / "out")))
    message = str(info.value)
    assert message.startswith(f"input.path: {path} is damaged: cannot read row groups 1-1 (rows 8-15)")
    assert "Traceback" not in message and "RayTaskError" not in message


# ------------------------------------------------------------------------------------------------ formats

def test_content_that_is_not_json_lines_is_one_clear_error(tmp_path):
    import gzip

    from pipelines.inputs import InputPlanError

    parquet = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": ["a", "b"]}), parquet)
    (tmp_path / "declared.jsonl").write_bytes(parquet.read_bytes())
    with pytest.raises(InputPlanError, match=r"declared.jsonl holds Parquet data \(it starts with b'PAR1'\), but it "
                                             r"is read as JSON Lines; rename it .parquet or set input.format: parquet"):
        read(tmp_path / "declared.jsonl")
    with pytest.raises(InputPlanError, match=r"p.parquet holds Parquet data"):
        read(parquet, format="jsonl")
    (tmp_path / "z.jsonl").write_bytes(gzip.compress(b'{"text": "x"}\n'))
    with pytest.raises(InputPlanError, match="z.jsonl holds gzip-compressed data"):
        read(tmp_path / "z.jsonl")
    (tmp_path / "arr.jsonl").write_text(json.dumps([{"text": f"t{i}"} for i in range(5)], indent=2))
    with pytest.raises(InputPlanError, match="arr.jsonl holds a JSON array, not JSON Lines"):
        read(tmp_path / "arr.jsonl")
    (tmp_path / "rows.jsonl").write_text('[1, 2]\n{"text": "fine"}\n')  # a list line is one error row, not the file
    assert [r["__input_error"] is None for r in read(tmp_path / "rows.jsonl")] == [False, True]
    write_jsonl(tmp_path / "j.parquet", [{"text": "x"}])
    with pytest.raises(InputPlanError, match=r"cannot read Parquet file .*j.parquet.*\(it holds JSON; set input.format"):
        read(tmp_path / "j.parquet")


def test_files_a_folder_does_not_read_are_listed(tmp_path):
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": "x"}])
    (tmp_path / "in" / "b.csv.gz").write_bytes(b"\x1f\x8b")
    (tmp_path / "in" / "notes.txt").write_text("n")
    (tmp_path / "in" / "_SUCCESS").write_text("")
    skipped: list[str] = []
    files = plan_inputs(Location.of(str(tmp_path / "in"), None), InputConfig(path=str(tmp_path / "in")), 4,
                        skipped=skipped)
    assert [f.name for f in files] == ["a.jsonl"]
    assert skipped == ["b.csv.gz (compressed, but the name does not say what it holds (name it .jsonl.gz))",
                       "notes.txt (unknown extension)"]
