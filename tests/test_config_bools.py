"""YAML's ``true``/``false`` is never a number: every integer and float field of the job, Serve, train and eval
configs rejects booleans, naming the field (pydantic's lax mode would read ``max_new_tokens: true`` as 1)."""

from __future__ import annotations

import pytest
import yaml

from pipelines.cli import main
from pipelines.config import ConfigError, JobConfig, load_config
from pipelines.evaluate import EvalConfig, load_eval_config
from pipelines.train import TrainConfig, load_train_config
from pipelines.serve_config import ServeConfig, ServeConfigError, load_serve_config

JOB = {"input": {"path": "in.jsonl"}, "output": {"path": "out"}, "engine": {"checkpoint": "ckpt"}}


def _write(tmp_path, data, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_job_config_file_with_a_boolean_token_count_names_the_field(tmp_path):
    path = _write(tmp_path, {**JOB, "sampling": {"max_new_tokens": True}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.problems == ["sampling.max_new_tokens: must be an integer, not a boolean (got true)"]


def test_set_override_with_a_boolean_is_a_config_error(tmp_path, capsys):
    path = _write(tmp_path, JOB)
    assert main(["run", str(path), "--set", "sampling.max_new_tokens=true"]) == 2
    assert "sampling.max_new_tokens: must be an integer, not a boolean (got true)" in capsys.readouterr().err


@pytest.mark.parametrize("section,key,kind", [
    ("sampling", "t_max", "a number"), ("workers", "num_gpus", "a number"), ("job", "max_error_fraction", "a number"),
    ("output", "rows_per_file", "an integer"), ("task", "max_input_chars", "an integer"),
])
def test_every_job_number_field_rejects_booleans(tmp_path, section, key, kind):
    data = {**JOB, section: {**JOB.get(section, {}), key: False}}
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, data))
    assert err.value.problems == [f"{section}.{key}: must be {kind}, not a boolean (got false)"]


def test_numbers_and_real_boolean_fields_still_work(tmp_path):
    cfg = load_config(_write(tmp_path, JOB), ["sampling.max_new_tokens=64", "sampling.t_max=1",
                                              "sampling.fixed_steps=true", "job.resume=false"])
    assert cfg.sampling.max_new_tokens == 64 and cfg.sampling.t_max == 1.0
    assert cfg.sampling.fixed_steps is True and cfg.job.resume is False


def test_serve_config_rejects_booleans(tmp_path):
    path = _write(tmp_path, {"engine": {"checkpoint": "ckpt"}})
    with pytest.raises(ServeConfigError) as err:
        load_serve_config(path, ["http.port=true", "deployment.num_cpus=true", "sampling.max_new_tokens=false"])
    assert sorted(err.value.problems) == [
        "deployment.num_cpus: must be a number, not a boolean (got true)",
        "http.port: must be an integer, not a boolean (got true)",
        "sampling.max_new_tokens: must be an integer, not a boolean (got false)",
    ]


def test_train_and_eval_configs_reject_booleans(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_train_config(_write(tmp_path, {"train": {"batch_size": True}}, "train.yaml"),
                          ["data.kind_weights.line=true"])
    text = "\n".join(err.value.problems)
    assert "train.batch_size: must be an integer, not a boolean" in text
    assert "data.kind_weights: must be a number, not a boolean" in text
    eval_cfg = {"models": [{"name": "m", "checkpoint": "c"}], "holes": True}
    with pytest.raises(ConfigError) as err:
        load_eval_config(_write(tmp_path, eval_cfg, "eval.yaml"))
    assert "holes: must be an integer, not a boolean" in "\n".join(err.value.problems)


@pytest.mark.parametrize("model", [JobConfig, ServeConfig, TrainConfig, EvalConfig])
def test_no_config_model_is_left_without_the_check(model):
    """Every nested config model derives from the checking base (a new section cannot forget it)."""
    from pydantic import BaseModel

    from pipelines.config import NoBoolNumbers

    seen, todo = set(), [model]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        assert issubclass(cls, NoBoolNumbers), cls.__name__
        for field in cls.model_fields.values():
            for arg in (field.annotation, *getattr(field.annotation, "__args__", ())):
                for inner in (arg, *getattr(arg, "__args__", ())):
                    if isinstance(inner, type) and issubclass(inner, BaseModel):
                        todo.append(inner)
    assert len(seen) > 1
