"""Whole jobs on the session's local Ray: the output contract, the summary, error rows, fail-fast problems,
reruns. S3 jobs are in test_pipeline_s3.py, killed jobs in test_pipeline_resume.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine import SamplingParams
from pipelines.config import validate_config
from pipelines.run import JobError, format_summary, run_job
from tests.pipeline_fixtures import (job_config, output_files, prompts, ray_cluster, read_output,  # noqa: F401
                                     write_jsonl, write_parquet)
from workers.batch import OUTPUT_SCHEMA

pytestmark = pytest.mark.usefixtures("ray_cluster")
REPO = Path(__file__).resolve().parents[1]


def run(cfg_dict):
    return run_job(validate_config(cfg_dict))


@pytest.mark.slow
def test_jsonl_generate_one_row_per_input_row(tmp_path, tiny_checkpoint):
    rows = prompts(14)
    rows[2]["text"] = ""
    rows[5]["text"] = None
    rows[6]["text"] = ["not", "a", "string"]
    rows[9]["text"] = "y" * 300
    src = write_jsonl(tmp_path / "in.jsonl", rows, extra_lines=["{not json"])
    out = tmp_path / "out"
    cfg = job_config(tiny_checkpoint, src, out, task={"max_input_chars": 200},
                     workers={"batch_size": 3, "concurrency": 2})
    result = run(cfg)
    assert result.exit_code == 0, result.message

    got = read_output(out)
    assert [r["id"] for r in got] == [f"doc-{i}" for i in range(14)] + ["in.jsonl:14"]
    assert output_files(out) == ["part-00000-000000000.parquet", "part-00000-000000008.parquet"]
    by_id = {r["id"]: r for r in got}
    errors = {k: v["error"] for k, v in by_id.items() if v["status"] == "error"}
    assert errors == {
        "doc-2": "text is empty", "doc-5": "text is null",
        "doc-6": "text field 'text' holds a JSON list, not a string",
        "doc-9": "text has 300 characters; task.max_input_chars is 200",
        "in.jsonl:14": errors.get("in.jsonl:14"),
    } and errors["in.jsonl:14"].startswith("line is not valid JSON")
    params = SamplingParams(max_new_tokens=8, max_denoising_steps=4)
    for r in got:
        assert set(r) == set(OUTPUT_SCHEMA.names)
        assert r["sampling_hash"] == params.digest() and r["model"] == tiny_checkpoint.name
        if r["status"] == "ok":
            assert r["error"] is None and isinstance(r["output"], str)
            assert 1 <= r["num_output_tokens"] <= 8 and r["num_passes"] >= 1 and r["seconds"] > 0

    summary = json.loads((out / "summary.json").read_text())
    assert summary == result.summary
    assert (summary["rows_total"], summary["rows_ok"], summary["rows_error"]) == (15, 10, 5)
    assert summary["rows_generated_this_run"] == 15 and summary["rows_resumed"] == 0
    assert summary["output_tokens"] == sum(r["num_output_tokens"] for r in got)
    assert summary["tokens_per_second"] > 0 and summary["mean_tokens_per_pass"] > 0 and summary["wall_seconds"] > 0
    # steady state beside wall clock: engine-busy seconds (summed over the 2 actors) exclude Ray start-up and load
    assert summary["tokens_per_second_wall"] == summary["tokens_per_second"]
    assert 0 < summary["engine_busy_seconds"] <= 2 * summary["wall_seconds"]
    assert summary["tokens_per_second_engine"] >= summary["tokens_per_second_wall"]
    assert summary["tokens_per_second_engine"] == summary["output_tokens_this_run"] / summary["engine_busy_seconds"]
    assert summary["config"]["sampling"]["max_new_tokens"] == 8 and summary["status"] == "ok"
    assert {e["error"] for e in summary["top_errors"]} >= {"text is empty", "text is null"}
    table = format_summary(summary)
    for label in ("rows", "ok", "error", "output tokens", "tokens / second", "mean tokens / pass", "wall time"):
        assert f"\n{label} " in table
    assert "wall (this run)" in table and "per engine while generating" in table
    assert not (out / "_redraft" / "staging").exists()

    # running it again finds everything done: nothing is generated, the files are untouched
    mtimes = {p: os.stat(out / p).st_mtime_ns for p in output_files(out)}
    again = run(cfg)
    assert again.summary["rows_generated_this_run"] == 0 and again.summary["rows_resumed"] == 15
    assert {p: os.stat(out / p).st_mtime_ns for p in output_files(out)} == mtimes
    assert read_output(out) == got


@pytest.mark.slow
def test_parquet_rewrite_without_id_column(tmp_path, tiny_checkpoint):
    write_parquet(tmp_path / "in" / "b.parquet", {"body": [f"Document {i}." for i in range(5)]}, row_group_size=2)
    write_parquet(tmp_path / "in" / "a.parquet", {"body": ["Alpha text.", None]})
    out = tmp_path / "out"
    cfg = job_config(tiny_checkpoint, tmp_path / "in", out,
                     input={"path": str(tmp_path / "in"), "id_column": None, "text_column": "body"},
                     task={"kind": "rewrite", "instruction": "Rewrite plainly:\n\n{text}"},
                     output={"rows_per_file": 4}, job={"max_error_fraction": 0.5})
    result = run(cfg)
    assert result.exit_code == 0
    got = read_output(out)
    assert [r["id"] for r in got] == ["a.parquet:0", "a.parquet:1"] + [f"b.parquet:{i}" for i in range(5)]
    assert [r["status"] for r in got] == ["ok", "error"] + ["ok"] * 5
    assert output_files(out) == ["part-00000-000000000.parquet", "part-00001-000000000.parquet",
                                 "part-00001-000000004.parquet"]


@pytest.mark.slow
def test_too_many_error_rows_exit_non_zero_but_write_every_row(tmp_path, tiny_checkpoint, capsys):
    from pipelines.cli import main

    rows = prompts(4) + [{"id": f"e{i}", "text": ""} for i in range(4)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    cfg_path = tmp_path / "job.json"  # JSON is YAML
    cfg_path.write_text(json.dumps(job_config(tiny_checkpoint, src, tmp_path / "out",
                                              job={"max_error_fraction": 0.25})))
    assert main(["run", str(cfg_path)]) == 1
    captured = capsys.readouterr()
    assert "4 of 8 rows are errors (50.0%), more than job.max_error_fraction (25.0%)" in captured.err
    assert "redraft job 'test': failed" in captured.out
    assert len(read_output(tmp_path / "out")) == 8
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["status"] == "failed"
    # the same output with a looser limit (not part of the fingerprint) passes and generates nothing new
    assert main(["run", str(cfg_path), "--set", "job.max_error_fraction=0.5", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows_generated_this_run"] == 0 and summary["status"] == "ok"


def test_fatal_problems_fail_fast(tmp_path, tiny_checkpoint):
    src = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    with pytest.raises(JobError, match="engine.checkpoint: .*directory not found"):
        run(job_config(tmp_path / "nope", src, tmp_path / "o1"))
    (tmp_path / "not-a-ckpt").mkdir()
    with pytest.raises(JobError, match="engine.checkpoint: .*no config.json"):
        run(job_config(tmp_path / "not-a-ckpt", src, tmp_path / "o1"))
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(JobError, match="output.path: cannot write"):
        run(job_config(tiny_checkpoint, src, tmp_path / "a-file" / "out"))
    with pytest.raises(JobError, match="input.path: .* does not exist"):
        run(job_config(tiny_checkpoint, tmp_path / "missing.jsonl", tmp_path / "o2"))
    with pytest.raises(JobError, match="workers: 9 actors x 1 CPUs leave no CPU"):
        run(job_config(tiny_checkpoint, src, tmp_path / "o3", workers={"concurrency": 9}))
    gpus = int(__import__("ray").cluster_resources().get("GPU", 0))
    if gpus == 0:
        with pytest.raises(JobError, match=r"engine.device: 1 GPUs per actor, but the Ray cluster has 0 GPUs"):
            run(job_config(tiny_checkpoint, src, tmp_path / "o4", engine={"device": "cuda"}))
    with pytest.raises(JobError, match=rf"workers.num_gpus: {gpus + 1} GPUs per actor, but the Ray cluster has {gpus}"):
        run(job_config(tiny_checkpoint, src, tmp_path / "o5", engine={"device": "auto"},
                       workers={"num_gpus": gpus + 1}))
    with pytest.raises(JobError, match=r"workers.num_gpus: GPUs requested for actors, but engine.device is 'cpu'"):
        run(job_config(tiny_checkpoint, src, tmp_path / "o6", workers={"num_gpus": 1}))


@pytest.mark.slow
def test_resume_refuses_a_different_job_and_resume_false_starts_over(tmp_path, tiny_checkpoint):
    src = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    out = tmp_path / "out"
    cfg = job_config(tiny_checkpoint, src, out)
    assert run(cfg).exit_code == 0
    first = read_output(out)
    changed = job_config(tiny_checkpoint, src, out, sampling={"seed": 5})
    with pytest.raises(JobError, match=r"different job \(sampling.seed: 0 -> 5\).*job.resume=false"):
        run(changed)
    write_jsonl(tmp_path / "in.jsonl", prompts(4))
    with pytest.raises(JobError, match="input.path: the input changed since the earlier run"):
        run(cfg)
    changed["job"]["resume"] = False
    result = run(changed)
    assert result.summary["rows_generated_this_run"] == 4 and result.summary["rows_resumed"] == 0
    second = read_output(out)
    assert [r["id"] for r in second] == [f"doc-{i}" for i in range(4)]
    assert second[0]["sampling_hash"] != first[0]["sampling_hash"]


def test_output_with_foreign_part_files_is_not_resumed(tmp_path, tiny_checkpoint):
    src = write_jsonl(tmp_path / "in.jsonl", prompts(2))
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-00000-000000000.parquet").write_bytes(b"not ours")
    (out / "part-0-spark.parquet").write_bytes(b"someone else's")
    with pytest.raises(JobError, match="already holds part files .* no _redraft/manifest.json"):
        run(job_config(tiny_checkpoint, src, out))
    (out / "_redraft").mkdir()
    (out / "_redraft" / "manifest.json").write_text("{broken")
    with pytest.raises(JobError, match="manifest.json is not valid JSON.*job.resume=false"):
        run(job_config(tiny_checkpoint, src, out))


@pytest.mark.slow
def test_resume_false_clears_only_redraft_files(tmp_path, tiny_checkpoint):
    src = write_jsonl(tmp_path / "in.jsonl", prompts(2))
    out = tmp_path / "out"
    (out / "_redraft").mkdir(parents=True)
    (out / "_redraft" / "manifest.json").write_text("{broken")
    (out / "part-00000-000000000.parquet").write_bytes(b"stale")
    (out / "part-0-spark.parquet").write_bytes(b"someone else's")
    result = run(job_config(tiny_checkpoint, src, out, job={"resume": False}))
    assert result.exit_code == 0 and len(read_output(out)) == 2
    assert (out / "part-0-spark.parquet").read_bytes() == b"someone else's"


def test_shape_mismatch_is_reported_from_the_headers_before_ray_starts(tmp_path, tiny_checkpoint, capsys):
    import shutil
    import time

    from pipelines.cli import main

    bad = tmp_path / "mismatched-ckpt"
    shutil.copytree(tiny_checkpoint, bad)
    config = json.loads((bad / "config.json").read_text())
    config["text_config"]["intermediate_size"] += 8  # the tensors no longer match the config
    (bad / "config.json").write_text(json.dumps(config))
    src = write_jsonl(tmp_path / "in.jsonl", prompts(2))
    started = time.perf_counter()
    with pytest.raises(JobError, match=r"engine.checkpoint: .*does not match its config.json.*\n  bad shape "
                       r"model.decoder.layers.0.mlp"):
        run(job_config(bad, src, tmp_path / "out"))
    assert time.perf_counter() - started < 10
    assert not (tmp_path / "out" / "_redraft").exists()  # nothing was planned, no actor started
    cfg_path = tmp_path / "job.json"
    cfg_path.write_text(json.dumps(job_config(bad, src, tmp_path / "out")))
    assert main(["run", str(cfg_path), "--check"]) == 1
    assert "bad shape model.decoder.layers.0.mlp" in capsys.readouterr().err


@pytest.mark.slow
def test_engine_failing_in_the_actors_stops_the_job_with_its_error(tmp_path, tiny_checkpoint):
    import shutil

    from safetensors.torch import load_file, save_file

    bad = tmp_path / "nan-ckpt"
    shutil.copytree(tiny_checkpoint, bad)
    tensors = load_file(bad / "model.safetensors")
    tensors = {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})  # headers fine: only an actor sees it
    src = write_jsonl(tmp_path / "in.jsonl", prompts(2))
    with pytest.raises(JobError, match=r"the job stopped: CheckpointError: .*tensor \S+ holds \d+ NaN/Inf values"):
        run(job_config(bad, src, tmp_path / "out"))


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_cluster_gets_one_actor_per_gpu_by_default(tmp_path, tiny_checkpoint):
    import ray

    from pipelines.cluster import actor_resources as _resources

    src = write_jsonl(tmp_path / "in.jsonl", prompts(6))
    cfg = job_config(tiny_checkpoint, src, tmp_path / "out", engine={"device": "auto", "dtype": "auto"},
                     workers={"concurrency": None})
    res = _resources(validate_config(cfg))
    assert res["num_gpus"] == 1 and res["concurrency"] == int(ray.cluster_resources()["GPU"])
    result = run(cfg)
    assert result.exit_code == 0 and result.summary["rows_ok"] == 6


@pytest.mark.slow
def test_shipped_demo_config_runs(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    from pipelines.cli import main

    monkeypatch.chdir(REPO)  # the demo's paths are relative to the repository root
    out = tmp_path / "demo"
    assert main(["run", "configs/demo.yaml", "--set", f"engine.checkpoint={tiny_checkpoint}",
                 "--set", f"output.path={out}"]) == 0
    assert "redraft job 'demo': ok" in capsys.readouterr().out
    rows = read_output(out)
    assert len(rows) == sum(1 for line in open(REPO / "configs" / "demo_prompts.jsonl") if line.strip())
