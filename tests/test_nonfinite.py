"""Garbage is never "ok": a model whose activations overflow (finite weights, embeddings scaled by 1e30) makes its
rows errors naming the cause, in the engine, in the bulk worker and in a whole job."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine import DiffusionEngine, NonFiniteError, SamplingParams
from pipelines.config import TaskConfig
from pipelines.convert import build_task
from tests.test_pipeline_worker import batch
from workers.batch import RedraftBatchWorker

PARAMS = SamplingParams(max_new_tokens=8, max_denoising_steps=4, seed=3)


@pytest.fixture(scope="module")
def overflowing_checkpoint(tiny_checkpoint, tmp_path_factory):
    dst = tmp_path_factory.mktemp("overflow") / "ckpt"
    shutil.copytree(tiny_checkpoint, dst)
    tensors = load_file(dst / "model.safetensors")
    tensors["model.decoder.embed_tokens.weight"] *= 1e30  # finite weights: the load check lets them through
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_nan_activations_are_named(tiny_checkpoint):
    engine = DiffusionEngine.from_pretrained(tiny_checkpoint, device="cpu", dtype="float32")
    engine.model.norm.weight.fill_(float("nan"))  # NaN after loading (the load check refuses it in a file)
    with pytest.raises(NonFiniteError, match=r"row 0: non-finite \(NaN/Inf\) hidden states and non-finite "
                                             r"\(NaN/Inf\) logits in canvas 1"):
        engine.generate(["Once upon a time"], PARAMS)


def test_engine_raises_naming_the_rows_and_the_cause(overflowing_checkpoint, tiny_engine):
    engine = DiffusionEngine.from_pretrained(overflowing_checkpoint, device="cpu", dtype="float32")
    with pytest.raises(NonFiniteError, match=r"row 0: all-zero hidden states in canvas 1, by pass \d+: the model's "
                                             r"activations overflowed") as err:
        engine.generate(["Once upon a time", "The cat"], PARAMS, seeds=[1, 2])
    assert err.value.rows == [0, 1]
    with pytest.raises(NonFiniteError):
        engine.denoise_canvases([[2, 3]], [[-1] * 4], PARAMS)
    ok = tiny_engine.generate(["Once upon a time"], PARAMS)  # the healthy model still answers
    assert ok[0].num_passes > 0


def test_worker_turns_non_finite_rows_into_error_rows(overflowing_checkpoint):
    from workers.batch import load_engine

    w = RedraftBatchWorker(str(overflowing_checkpoint), build_task(TaskConfig()), PARAMS, max_input_chars=100,
                           engine_loader=lambda *a: load_engine(str(overflowing_checkpoint), "cpu", "float32"))
    rows = w(batch(["Once upon a time", "The cat sat"])).to_pylist()
    assert [r["status"] for r in rows] == ["error", "error"]
    assert all(r["output"] is None and "NonFiniteError: row 0: all-zero hidden states" in r["error"] for r in rows)
    assert torch.isfinite(w.engine.model.embed_tokens.weight).all()  # finite weights, overflowing activations


@pytest.mark.slow
def test_job_on_an_overflowing_model_fails_with_error_rows(overflowing_checkpoint, tmp_path, ray_cluster):
    from pipelines.config import validate_config
    from pipelines.run import run_job
    from tests.pipeline_fixtures import job_config, prompts, read_output, write_jsonl

    src = write_jsonl(tmp_path / "in.jsonl", prompts(4))
    result = run_job(validate_config(job_config(overflowing_checkpoint, src, tmp_path / "out",
                                                job={"max_error_fraction": 0.1})))
    assert result.exit_code == 1 and result.summary["rows_error"] == 4 and result.summary["rows_ok"] == 0
    assert "all-zero hidden states" in result.summary["top_errors"][0]["error"]
    assert all(r["status"] == "error" and r["output"] is None for r in read_output(tmp_path / "out"))


from tests.pipeline_fixtures import ray_cluster  # noqa: E402,F401
