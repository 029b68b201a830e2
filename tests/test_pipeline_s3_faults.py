"""S3 faults: jobs whose input and output go through ``tests.s3_fault_proxy`` (500/503 answers, dropped connections,
stalls) in front of a real moto server. The S3 client retries (the AWS SDK's standard mode, ``storage.max_attempts``);
errors that outlast it, and an output bucket deleted mid job, end in one message that says what to do."""

from __future__ import annotations

import json
import pickle
import threading
import time

import pyarrow.fs as pafs
import pytest

from pipelines.config import StorageConfig, validate_config
from pipelines.run import JobError, run_job
from pipelines.storage import Location
from tests.pipeline_fixtures import (S3_KEY, S3_SECRET, job_config, make_bucket, prompts, ray_cluster,  # noqa: F401
                                     read_output, s3_fs, s3_server)
from tests.s3_fault_proxy import FaultProxy

N_ROWS = 48


def storage(url: str, **extra) -> dict:
    return {"endpoint_url": url, "region": "us-east-1", "access_key_id": S3_KEY, "secret_access_key": S3_SECRET,
            **extra}


def put_jsonl(fs, path: str, rows: list[dict]) -> None:
    with fs.open_output_stream(path) as out:
        out.write("".join(json.dumps(r) + "\n" for r in rows).encode())


def test_client_retries_absorb_a_third_of_requests_failing(s3_server):
    make_bucket(s3_server, "flaky-unit")
    with FaultProxy(s3_server, rate=0.33, kinds=("500", "503", "drop"), seed=1) as proxy:
        loc = Location.of("s3://flaky-unit/x", StorageConfig(**storage(proxy.url)))
        loc = pickle.loads(pickle.dumps(loc))  # what a Ray task gets: the retry settings must survive pickling
        for i in range(12):
            loc.write_bytes(loc.join(f"f{i}.txt"), f"file {i}".encode())
        assert [loc.read_bytes(loc.join(f"f{i}.txt")) for i in range(12)] == [f"file {i}".encode() for i in range(12)]
        assert len(loc.list_files(loc.root)) == 12
    assert proxy.faults() >= 5, proxy.counts


def s3_job(tiny_checkpoint, url: str, bucket: str, **job) -> dict:
    return job_config(tiny_checkpoint, f"s3://{bucket}/in/", f"s3://{bucket}-out/run",
                      input={"path": f"s3://{bucket}/in/", "storage": storage(url)},
                      output={"rows_per_file": 8},
                      sampling={"max_new_tokens": 8, "max_denoising_steps": 3, "fixed_steps": True},
                      workers={"batch_size": 4, "concurrency": 1}, job={"name": bucket, **job})


def setup_buckets(s3_server, bucket: str, n: int = N_ROWS):
    fs = s3_fs(s3_server)
    make_bucket(s3_server, bucket)
    make_bucket(s3_server, f"{bucket}-out")
    put_jsonl(fs, f"{bucket}/in/a.jsonl", prompts(n // 2, "a"))
    put_jsonl(fs, f"{bucket}/in/b.jsonl", prompts(n - n // 2, "b"))
    return fs


def assert_exactly_once(fs, bucket: str, n: int = N_ROWS) -> list[dict]:
    rows = read_output(f"{bucket}-out/run", fs)
    ids = [r["id"] for r in rows]
    want = [f"a-{i}" for i in range(n // 2)] + [f"b-{i}" for i in range(n - n // 2)]
    assert sorted(ids) == sorted(want) and len(set(ids)) == len(ids), (len(ids), len(set(ids)))
    assert all(r["status"] == "ok" for r in rows)
    return rows


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.parametrize("rate", [0.2, 0.0])  # 0.0: the same job through the proxy without faults, for its time
def test_job_at_20_percent_faults_finishes_in_one_run(s3_server, tiny_checkpoint, rate):
    bucket = f"flaky{int(rate * 100)}"
    fs = setup_buckets(s3_server, bucket)
    with FaultProxy(s3_server, rate=rate, seed=20, stall_s=12) as proxy:
        started = time.perf_counter()
        result = run_job(validate_config(s3_job(tiny_checkpoint, proxy.url, bucket)))
        seconds = time.perf_counter() - started
    assert result.exit_code == 0 and result.summary["attempts"] == 1
    ids = [r["id"] for r in read_output(f"{bucket}-out/run", fs)]
    figures = {"fault_rate": proxy.rate, "requests": proxy.counts["requests"], "faults_injected": proxy.faults(),
               "faults_pct": round(100 * proxy.faults() / proxy.counts["requests"], 1),
               "faults_by_kind": {k: proxy.counts[k] for k in ("500", "503", "drop", "stall")},
               "rows_in": N_ROWS, "rows_out": len(ids), "duplicates": len(ids) - len(set(ids)),
               "lost": N_ROWS - len(set(ids)), "attempts": result.summary["attempts"], "seconds": round(seconds, 1)}
    print("RELIABILITY " + json.dumps(figures))
    assert_exactly_once(fs, bucket)
    assert proxy.faults() >= 10 if rate else proxy.faults() == 0, proxy.counts


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_output_bucket_deleted_mid_job_then_rerun_finishes_once(s3_server, tiny_checkpoint):
    fs = setup_buckets(s3_server, "gone")
    cfg = validate_config(s3_job(tiny_checkpoint, s3_server, "gone"))
    admin = s3_fs(s3_server, allow_bucket_deletion=True)
    deleted = threading.Event()

    def delete_when_staged():
        while not deleted.is_set():
            infos = fs.get_file_info(pafs.FileSelector("gone-out/run/_redraft/staging", recursive=True,
                                                       allow_not_found=True))
            if sum(i.type == pafs.FileType.File for i in infos) >= 2:
                admin.delete_dir("gone-out")  # its objects, then the bucket
                deleted.set()
            time.sleep(0.05)

    thread = threading.Thread(target=delete_when_staged, daemon=True)
    thread.start()
    try:
        with pytest.raises(JobError) as info:
            run_job(cfg)
    finally:
        deleted.set()
        thread.join(5)
    message = str(info.value)
    assert "output.path: the bucket 'gone-out' of s3://gone-out/run no longer exists" in message, message
    assert "rows staged or written there were lost" in message and "Create the bucket again" in message
    assert "are kept" not in message and "Traceback" not in message
    make_bucket(s3_server, "gone-out")
    result = run_job(cfg)
    assert result.exit_code == 0 and result.summary["rows_resumed"] == 0
    assert result.summary["rows_generated_this_run"] == N_ROWS
    assert_exactly_once(fs, "gone")


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_staging_cleanup_that_keeps_failing_is_a_warning(s3_server, tiny_checkpoint, caplog):
    fs = setup_buckets(s3_server, "nodelete", 16)

    def rule(method, path):  # every delete of staged rows fails: listing staging shows keys under .../staging/
        return "500" if method in ("DELETE", "POST") and ("delete" in path or "staging" in path) else None

    with FaultProxy(s3_server, rule=rule) as proxy:
        cfg = s3_job(tiny_checkpoint, proxy.url, "nodelete")
        cfg["input"]["storage"]["max_attempts"] = 2
        with caplog.at_level("WARNING", logger="redraft"):
            result = run_job(validate_config(cfg))
    assert result.exit_code == 0
    assert_exactly_once(fs, "nodelete", 16)
    assert proxy.counts["500"] >= 2, proxy.counts
    warned = [r.getMessage() for r in caplog.records if "staging folder" in r.getMessage()]
    assert warned and all("not removed" in w or "could not remove" in w for w in warned), warned
    rerun = run_job(validate_config(s3_job(tiny_checkpoint, s3_server, "nodelete")))  # leftovers are cleaned
    assert rerun.summary["rows_resumed"] == 16
    infos = fs.get_file_info(pafs.FileSelector("nodelete-out/run/_redraft/staging", recursive=True,
                                               allow_not_found=True))
    assert not [i for i in infos if i.type == pafs.FileType.File]


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.parametrize("target, where", [("/run/part-", "during compaction"), ("/run/summary.json", "the final summary")])
def test_persistent_s3_error_in_compaction_or_summary_is_one_message(s3_server, tiny_checkpoint, target, where):
    bucket = "failpart" if "part" in target else "failsummary"
    fs = setup_buckets(s3_server, bucket, 16)

    def rule(method, path):
        return "503" if method == "PUT" and target in path else None

    with FaultProxy(s3_server, rule=rule) as proxy:
        cfg = s3_job(tiny_checkpoint, proxy.url, bucket)
        cfg["input"]["storage"]["max_attempts"] = 2
        with pytest.raises(JobError) as info:
            run_job(validate_config(cfg))
    message = str(info.value)
    assert where in message and "run the same command again to resume" in message, message
    assert f"s3://{bucket}-out/run/" in message and "SLOW_DOWN" in message.upper().replace(" ", "_"), message
    assert "Traceback" not in message and "\n  File " not in message
    assert proxy.counts["503"] >= 2
    result = run_job(validate_config(s3_job(tiny_checkpoint, s3_server, bucket)))  # the store is back: finishes
    assert result.exit_code == 0
    assert result.summary["rows_generated_this_run"] == 0  # every row was staged or written before
    assert_exactly_once(fs, bucket, 16)
