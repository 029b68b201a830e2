"""The 'vllm' backend end to end: ``redraft run`` with a tiny random Llama served by vLLM through Ray's
``ray.data.llm`` processor, held to the diffusion backend's output contract.

vLLM is an optional extra whose pins clash with the dev extra (transformers), so these tests run in their own
environment (``.ci/run`` builds ``.venv-vllm``: ``python -m pytest -q -m vllm tests/test_vllm_backend.py``) and
skip where vLLM is not installed. The config-level tests (backend choice, refused task kinds) need no vLLM.
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from pipelines.config import ConfigError, validate_config
from pipelines.run import JobError, run_job
from tests.pipeline_fixtures import job_config, output_files, ray_cluster, read_output, write_jsonl  # noqa: F401
from tests.vllm_fixtures import tiny_llama  # noqa: F401
from workers.batch import OUTPUT_SCHEMA, STAGED_SCHEMA

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
requires_vllm = pytest.mark.skipif(not HAVE_VLLM, reason="vLLM is not installed (the vllm extra)")


def vllm_job(checkpoint, src, out, **sections) -> dict:
    engine = {"backend": "vllm", "vllm": {"max_model_len": 256, "cpu_kv_cache_gib": 1}}
    return job_config(checkpoint, src, out, engine=engine, **sections)


@pytest.mark.parametrize("kind", ["infill", "edit", "structured"])
def test_editing_kinds_are_refused_for_vllm(kind, tmp_path):
    task = {"kind": kind, **({"template": {"title": "x"}} if kind == "structured" else {})}
    cfg = job_config(tmp_path, tmp_path / "in.jsonl", tmp_path / "out", engine={"backend": "vllm"}, task=task)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    line = [p for p in err.value.problems if p.startswith("engine.backend")]
    assert line and f"task.kind {kind!r}" in line[0] and "'vllm'" in line[0], err.value.problems


def test_backend_choice_and_vllm_settings_are_validated(tmp_path):
    base = job_config(tmp_path, tmp_path / "in.jsonl", tmp_path / "out")
    assert validate_config(base).engine.backend == "redraft"
    with pytest.raises(ConfigError, match=r"engine.backend: unknown backend 'tgi'; choose 'redraft' or 'vllm'"):
        validate_config({**base, "engine": {**base["engine"], "backend": "tgi"}})
    with pytest.raises(ConfigError, match=r"engine.vllm.temperature: must be >= 0"):
        validate_config({**base, "engine": {**base["engine"], "backend": "vllm", "vllm": {"temperature": -1}}})
    ok = validate_config({**base, "engine": {**base["engine"], "backend": "vllm"}, "task": {"kind": "rewrite",
                                                                                         "instruction": "Fix: {text}"}})
    assert ok.engine.vllm.temperature == 0.0
    # the vllm settings are part of the resume fingerprint only for the vllm backend
    assert "vllm" in ok.fingerprint_fields()["engine"]
    assert "vllm" not in validate_config(base).fingerprint_fields()["engine"]


@pytest.mark.vllm
def test_vllm_sampling_maps_the_job_settings(tiny_llama, tmp_path):
    cfg = validate_config(vllm_job(tiny_llama, tmp_path / "in.jsonl", tmp_path / "out",
                                   sampling={"max_new_tokens": 12, "seed": 5, "max_denoising_steps": 3}))
    sampling = cfg.sampling_params()
    request = sampling.for_row("doc-1")
    assert request["max_tokens"] == 12 and request["temperature"] == 0.0 and request["ignore_eos"] is False
    assert request["seed"] == sampling.for_row("doc-1")["seed"] != sampling.for_row("doc-2")["seed"]
    assert 1 in request["stop_token_ids"]  # <eos> of the tiny tokenizer (and <end_of_turn>, 4)
    assert 4 in request["stop_token_ids"]
    other = validate_config(vllm_job(tiny_llama, tmp_path / "in.jsonl", tmp_path / "out",
                                     sampling={"max_new_tokens": 12, "seed": 6}))
    assert other.sampling_params().digest() != sampling.digest()
    # the denoising settings do not reach vLLM, so they do not change the rows' sampling hash
    same = validate_config(vllm_job(tiny_llama, tmp_path / "in.jsonl", tmp_path / "out",
                                    sampling={"max_new_tokens": 12, "seed": 5, "max_denoising_steps": 9}))
    assert same.sampling_params().digest() == sampling.digest()


@pytest.mark.skipif(HAVE_VLLM, reason="checks the message shown where vLLM is not installed")
def test_vllm_job_without_vllm_fails_fast_with_the_install_hint(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "hello"}])
    cfg = validate_config(vllm_job(tmp_path, src, tmp_path / "out"))
    with pytest.raises(JobError, match=r"pip install 'redraft\[vllm\]'"):
        run_job(cfg)


def _rows(n: int) -> list[dict]:
    rows = [{"id": f"doc-{i}", "text": f"def function_{i}(value):\n    return"} for i in range(n)]
    rows[3]["text"] = ""
    rows[7]["text"] = None
    rows[11]["text"] = "x " * 400  # longer than max_model_len 256 - max_new_tokens 8 tokens
    return rows


@pytest.mark.vllm
@requires_vllm
@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.parametrize("kind", ["generate", "rewrite"])
def test_vllm_job_keeps_the_output_contract(kind, tiny_llama, tmp_path):
    rows = _rows(30)
    src = write_jsonl(tmp_path / "in.jsonl", rows, extra_lines=["{not json"])
    out = tmp_path / "out"
    task = {"kind": kind, **({"instruction": "Rewrite plainly: {text}"} if kind == "rewrite" else {})}
    cfg = validate_config(vllm_job(tiny_llama, src, out, task=task, output={"rows_per_file": 10},
                                   workers={"batch_size": 8, "concurrency": 1}))
    result = run_job(cfg)
    assert result.exit_code == 0, result.message

    got = read_output(out)
    assert [r["id"] for r in got] == [f"doc-{i}" for i in range(30)] + ["in.jsonl:30"]
    assert output_files(out) == ["part-00000-000000000.parquet", "part-00000-000000010.parquet",
                                 "part-00000-000000020.parquet", "part-00000-000000030.parquet"]
    import pyarrow.parquet as pq

    assert pq.read_schema(out / "part-00000-000000000.parquet").names == STAGED_SCHEMA.names[:len(OUTPUT_SCHEMA)]
    errors = {r["id"]: r["error"] for r in got if r["status"] == "error"}
    assert set(errors) == {"doc-3", "doc-7", "doc-11", "in.jsonl:30"}
    assert errors["doc-3"] == "text is empty" and errors["doc-7"] == "text is null"
    assert errors["doc-11"].startswith("prompt has ") and errors["doc-11"].endswith("the model takes at most 248")
    assert errors["in.jsonl:30"].startswith("line is not valid JSON")
    digest = cfg.sampling_params().digest()
    for r in got:
        assert set(r) == set(OUTPUT_SCHEMA.names)
        assert r["model"] == tiny_llama.name and r["sampling_hash"] == digest
        if r["status"] == "ok":
            assert r["error"] is None and isinstance(r["output"], str)
            assert 1 <= r["num_output_tokens"] <= 8
            assert r["num_passes"] == r["num_output_tokens"] and r["tokens_per_pass"] == 1.0 and r["seconds"] > 0
        else:
            assert r["output"] is None and r["num_output_tokens"] == r["num_passes"] == 0

    summary = json.loads((out / "summary.json").read_text())
    assert (summary["rows_total"], summary["rows_ok"], summary["rows_error"]) == (31, 27, 4)
    assert summary["rows_generated_this_run"] == 31 and summary["rows_resumed"] == 0
    assert summary["output_tokens"] == sum(r["num_output_tokens"] for r in got) > 0
    assert summary["mean_tokens_per_pass"] == 1.0 and summary["tokens_per_second"] > 0
    assert summary["sampling_hash"] == digest and summary["config"]["engine"]["backend"] == "vllm"

    # resume: a rerun finds every row done and generates nothing
    mtimes = {p: os.stat(out / p).st_mtime_ns for p in output_files(out)}
    again = run_job(cfg)
    assert again.summary["rows_generated_this_run"] == 0 and again.summary["rows_resumed"] == 31
    assert {p: os.stat(out / p).st_mtime_ns for p in output_files(out)} == mtimes

    # greedy decoding with per-row seeds: a fresh run in other batches gives the same rows
    other = validate_config(vllm_job(tiny_llama, src, tmp_path / "out2", task=task, output={"rows_per_file": 10},
                                     workers={"batch_size": 3, "concurrency": 1}))
    assert run_job(other).exit_code == 0
    assert [r["output"] for r in read_output(tmp_path / "out2")] == [r["output"] for r in got]
