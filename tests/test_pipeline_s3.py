"""Jobs against a real S3 endpoint: a moto server on 127.0.0.1 (no mocks, no traffic elsewhere)."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pipelines.config import validate_config
from pipelines.run import JobError, run_job
from tests.pipeline_fixtures import (job_config, make_bucket, prompts, ray_cluster, read_output,  # noqa: F401
                                     s3_fs, s3_server, s3_storage, write_jsonl)

pytestmark = pytest.mark.usefixtures("ray_cluster")


def put_parquet(fs, path, columns):
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    with fs.open_output_stream(path) as out:
        out.write(buf.getvalue())


@pytest.mark.slow
def test_s3_parquet_rewrite_to_s3(s3_server, tiny_checkpoint):
    fs = s3_fs(s3_server)
    make_bucket(s3_server, "corpus")
    make_bucket(s3_server, "results")
    put_parquet(fs, "corpus/docs/part-0.parquet", {"doc_id": [f"d{i}" for i in range(6)],
                                                   "body": [f"Paragraph {i} of the report." for i in range(6)]})
    put_parquet(fs, "corpus/docs/part-1.parquet", {"doc_id": ["d6", "d7"], "body": ["Last one.", ""]})
    cfg = job_config(tiny_checkpoint, "s3://corpus/docs/*.parquet", "s3://results/nightly",
                     input={"path": "s3://corpus/docs/*.parquet", "id_column": "doc_id", "text_column": "body",
                            "storage": s3_storage(s3_server)},
                     output={"rows_per_file": 4},  # output.storage left out: input.storage is used
                     task={"kind": "rewrite", "instruction": "Rewrite for a general audience:\n{text}"})
    result = run_job(validate_config(cfg))
    assert result.exit_code == 0
    rows = read_output("results/nightly", fs)
    assert [r["id"] for r in rows] == [f"d{i}" for i in range(8)]
    assert [r["status"] for r in rows] == ["ok"] * 7 + ["error"]
    infos = fs.get_file_info(pafs.FileSelector("results/nightly", recursive=True))
    names = sorted(i.base_name for i in infos if i.type == pafs.FileType.File)
    assert names == ["manifest.json", "part-00000-000000000.parquet", "part-00000-000000004.parquet",
                     "part-00001-000000000.parquet", "summary.json"]
    with fs.open_input_stream("results/nightly/summary.json") as f:
        summary = json.loads(f.read())
    assert summary["rows_total"] == 8 and summary["rows_error"] == 1
    assert summary["config"]["input"]["storage"]["secret_access_key"] == "**********"


def test_s3_output_not_writable_fails_fast(s3_server, tiny_checkpoint, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", prompts(2))
    cfg = job_config(tiny_checkpoint, src, "s3://no-such-bucket/out", output={"storage": s3_storage(s3_server)})
    with pytest.raises(JobError, match="output.path: cannot write s3://no-such-bucket/out/_redraft/manifest.json"):
        run_job(validate_config(cfg))
