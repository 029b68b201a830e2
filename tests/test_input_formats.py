"""Inputs say what they are: the format comes from each file's name (.parquet, .jsonl / .ndjson, .json arrays,
.gz / .zst compressed JSON), locally and on S3; bad records inside these formats are error rows naming the file
and record; a truncated compressed file is one error naming it. Files are written for real, bytes and all."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pytest

from pipelines.config import ConfigError, InputConfig, validate_config
from pipelines.inputs import InputPlanError, InputReadError, make_shards, plan_inputs, read_shard
from pipelines.storage import Location
from tests.pipeline_fixtures import (make_bucket, ray_cluster, s3_fs, s3_server, s3_storage,  # noqa: F401
                                     write_jsonl)


def lines(rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


def read_all(path, rows_per_file=3, storage=None, skipped=None, **cfg):
    icfg = InputConfig(path=str(path), storage=storage or {}, **cfg)
    loc = Location.of(str(path), icfg.storage)
    files = plan_inputs(loc, icfg, rows_per_file, skipped=skipped)
    shards = make_shards(files, rows_per_file)
    return files, [r for s in shards for r in read_shard(loc, s, icfg, frozenset(), rows_per_file).to_pylist()]


def rows_of(n, prefix):
    return [{"id": f"{prefix}{i}", "text": f"{prefix} text {i}"} for i in range(n)]


def write_folder(root):
    root.mkdir()
    (root / "a.jsonl.gz").write_bytes(gzip.compress(lines(rows_of(7, "g"))))
    (root / "b.ndjson.zst").write_bytes(zstd(lines(rows_of(4, "z"))))
    (root / "c.json").write_text(json.dumps(rows_of(5, "j"), indent=2))  # 22 lines, 5 records
    (root / "d.json.gz").write_bytes(gzip.compress(json.dumps(rows_of(2, "k")).encode()))
    (root / "e.csv").write_text("id,text\n")


def test_a_folder_of_compressed_and_array_files_is_read_by_name(tmp_path):
    write_folder(tmp_path / "in")
    skipped: list[str] = []
    files, got = read_all(tmp_path / "in", skipped=skipped, id_column="id")
    assert [(f.name, f.format, f.compression, f.num_rows) for f in files] == [
        ("a.jsonl.gz", "jsonl", "gzip", 7), ("b.ndjson.zst", "jsonl", "zstd", 4), ("c.json", "json", None, 5),
        ("d.json.gz", "json", "gzip", 2)]
    assert [r["__id"] for r in got] == [f"g{i}" for i in range(7)] + [f"z{i}" for i in range(4)] + \
        [f"j{i}" for i in range(5)] + ["k0", "k1"]
    assert all(r["__input_error"] is None for r in got)
    assert got[8]["__text"] == "z text 1" and got[13]["__row"] == 2
    assert skipped == ["e.csv (unknown extension)"]


def test_bad_records_in_a_json_array_are_error_rows_naming_file_and_record(tmp_path):
    path = tmp_path / "recs.json"
    path.write_bytes(b'[{"id": "a", "text": "fine"}, [1, 2], {"id": "c", "text": "x \\ud800"}, {"id": "d"},\n'
                     b' {"id": "e", "text": "caf\xe9"}, {"id": "f", "text": "also fine"}]')
    _, got = read_all(path, id_column="id")
    assert [r["__id"] for r in got] == ["a", "recs.json:1", "c", "d", "e", "f"]
    errors = [r["__input_error"] for r in got]
    assert errors[0] is None and errors[5] is None
    assert errors[1].startswith("record is a JSON list, not an object")
    assert errors[2] == ("text field 'text' is not valid Unicode (a lone surrogate '\\ud800' at character 2) "
                         "(recs.json, row 2)")
    assert errors[3] == "row has no field 'text'"
    assert errors[4].startswith("text field 'text' is not valid Unicode") and errors[4].endswith("(recs.json, row 4)")


def test_bad_lines_in_a_compressed_file_are_error_rows(tmp_path):
    path = tmp_path / "x.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"id": "a", "text": "ok"}\n{"id": "b", "text": \n{"id": "c", "text": 3}\n'))
    _, got = read_all(path, rows_per_file=2, id_column="id")
    assert [r["__id"] for r in got] == ["a", "x.jsonl.gz:1", "c"]
    assert got[1]["__input_error"].startswith("line is not valid JSON") and "(x.jsonl.gz, row 1)" in \
        got[1]["__input_error"]
    assert got[2]["__input_error"] == "text field 'text' holds a JSON int, not a string"


def test_a_truncated_compressed_file_is_one_error_naming_it(tmp_path):
    data = gzip.compress(lines(rows_of(400, "t")))
    (tmp_path / "t.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputPlanError, match=r"input.path: cannot decompress .*t.jsonl.gz \(gzip\): Truncated "
                                             r"compressed stream; the file is truncated or damaged"):
        read_all(tmp_path / "t.jsonl.gz")
    # damaged after planning (same size): reading the shard stops the job naming the file
    path = tmp_path / "late.jsonl.zst"
    path.write_bytes(zstd(lines(rows_of(400, "t"))))
    icfg = InputConfig(path=str(path))
    loc = Location.of(str(path), None)
    shards = make_shards(plan_inputs(loc, icfg, 100), 100)
    good = path.read_bytes()
    path.write_bytes(good[:20] + bytes(b ^ 0xFF for b in good[20:40]) + good[40:])
    with pytest.raises(InputReadError, match=r"cannot decompress .*late.jsonl.zst \(zstd\).*Replace or remove it"):
        read_shard(loc, shards[3], icfg, frozenset(), 100)


def test_declared_and_actual_content_must_agree(tmp_path):
    (tmp_path / "plain.jsonl").write_bytes(gzip.compress(b'{"text": "x"}\n'))
    with pytest.raises(InputPlanError, match=r"plain.jsonl holds gzip-compressed data .*name it with a .gz ending"):
        read_all(tmp_path / "plain.jsonl")
    (tmp_path / "arr.jsonl").write_text(json.dumps(rows_of(3, "a")))
    with pytest.raises(InputPlanError, match=r"arr.jsonl holds a JSON array, not JSON Lines .*input.format: json"):
        read_all(tmp_path / "arr.jsonl")
    (tmp_path / "broken.json").write_text('[{"text": "a"}, {"text": ')
    with pytest.raises(InputPlanError, match=r"broken.json is not valid JSON \(Expecting value: line 1"):
        read_all(tmp_path / "broken.json")
    (tmp_path / "obj.txt").write_text('{"text": "a"}')
    with pytest.raises(InputPlanError, match=r"obj.txt does not hold a JSON array .*set input.format: jsonl"):
        read_all(tmp_path / "obj.txt", format="json")


def test_explicit_formats_keep_working(tmp_path):
    # a .json file of one object per line: read as JSON Lines (as before), by name and with format: jsonl
    write_jsonl(tmp_path / "in" / "lines.json", rows_of(4, "l"))
    for fmt in ("auto", "jsonl"):
        files, got = read_all(tmp_path / "in", format=fmt)
        assert files[0].format == "jsonl" and [r["__text"] for r in got] == [f"l text {i}" for i in range(4)]
    (tmp_path / "data.txt.gz").write_bytes(gzip.compress(lines(rows_of(2, "t"))))
    files, got = read_all(tmp_path / "data.txt.gz", format="jsonl")
    assert (files[0].compression, len(got)) == ("gzip", 2)
    with pytest.raises(InputPlanError, match=r"input.format: cannot tell the format of .*data.txt.gz from its name"):
        read_all(tmp_path / "data.txt.gz")


def test_an_unknown_format_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"input.format: must be one of 'auto', 'parquet', 'jsonl' or 'json' "
                                          r"\(got 'csv'\)"):
        validate_config({"input": {"path": str(tmp_path), "format": "csv"}, "output": {"path": str(tmp_path / "o")},
                         "engine": {"checkpoint": str(tmp_path)}})


def test_compressed_and_array_files_on_s3(s3_server):
    fs = s3_fs(s3_server)
    make_bucket(s3_server, "formats")
    with fs.open_output_stream("formats/in/a.jsonl.gz", compression=None) as out:
        out.write(gzip.compress(lines(rows_of(5, "g"))))
    with fs.open_output_stream("formats/in/b.json", compression=None) as out:
        out.write(json.dumps(rows_of(3, "j")).encode())
    with fs.open_output_stream("formats/in/c.jsonl.zst", compression=None) as out:
        out.write(zstd(lines(rows_of(2, "z"))))
    files, got = read_all("s3://formats/in", storage=s3_storage(s3_server), id_column="id")
    assert [(f.name, f.format, f.compression) for f in files] == [
        ("a.jsonl.gz", "jsonl", "gzip"), ("b.json", "json", None), ("c.jsonl.zst", "jsonl", "zstd")]
    assert [r["__id"] for r in got] == [f"g{i}" for i in range(5)] + ["j0", "j1", "j2", "z0", "z1"]


@pytest.mark.slow
def test_a_job_on_a_mixed_folder_writes_every_record_and_lists_the_skipped(tmp_path, tiny_checkpoint, ray_cluster):
    from pipelines.run import run_job
    from tests.pipeline_fixtures import job_config, read_output

    write_folder(tmp_path / "in")
    result = run_job(validate_config(job_config(tiny_checkpoint, tmp_path / "in", tmp_path / "out")))
    assert result.exit_code == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["skipped_files"] == ["e.csv (unknown extension)"]
    rows = read_output(tmp_path / "out")
    assert sorted(r["id"] for r in rows) == sorted([f"g{i}" for i in range(7)] + [f"z{i}" for i in range(4)] +
                                                   [f"j{i}" for i in range(5)] + ["k0", "k1"])
    assert summary["rows_total"] == 18 and all(r["status"] == "ok" for r in rows)
