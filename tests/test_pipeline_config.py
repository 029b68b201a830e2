"""Job config: validation messages name the field, overrides, env references, secrets, fingerprint; the CLI's
help and exit codes. No Ray here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main
from pydantic import ValidationError

from engine.sampling.params import SamplingParams
from pipelines.config import ConfigError, JobConfig, apply_overrides, describe_fields, load_config, validate_config

REPO = Path(__file__).resolve().parents[1]


def base() -> dict:
    return {"input": {"path": "in.jsonl"}, "output": {"path": "out"}, "engine": {"checkpoint": "ckpt"}}


def problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as err:
        validate_config(data)
    return err.value.problems


def test_minimal_config_gets_documented_defaults():
    cfg = validate_config(base())
    assert cfg.task.kind == "generate" and cfg.engine.backend == "redraft" and cfg.job.resume is True
    assert cfg.sampling_params().to_dict() == {**cfg.sampling.model_dump()}
    for key, _, desc in describe_fields():
        assert desc, f"{key} has no description"


@pytest.mark.parametrize("section,value,expected", [
    ("sampling", {"entropy_bound": -1}, "sampling.entropy_bound: must be > 0 (got -1)"),
    ("sampling", {"max_denoising_steps": 0}, "sampling.max_denoising_steps: must be >= 1 (got 0)"),
    ("sampling", {"t_max": 0.5, "t_min": 0.7}, "sampling.t_min: must be <= t_max (0.5)"),
    ("sampling", {"seed": "abc"}, "sampling.seed: must be an integer (got 'abc')"),
    ("sampling", {"entropy_bund": 0.2}, "sampling.entropy_bund: unknown field; did you mean 'entropy_bound'?"),
    ("task", {"kind": "rewrite"}, "task.instruction: required when task.kind is 'rewrite'"),
    ("task", {"kind": "rewrite", "instruction": "Fix this."}, "task.instruction: must contain '{text}'"),
    ("task", {"kind": "summarize"}, "task.kind: must be one of 'generate', 'rewrite', 'infill', 'edit' or 'structured'"),
    ("engine", {"checkpoint": "c", "backend": "tgi"}, "engine.backend: unknown backend 'tgi'; choose 'redraft' or 'vllm'"),
    ("workers", {"concurrency": [3, 1]}, "workers.concurrency: [min, max] needs 1 <= min <= max"),
    ("workers", {"concurrency": "many"}, "workers.concurrency: must be an integer or [min, max]"),
    ("output", {"path": "o", "rows_per_file": 0}, "output.rows_per_file: must be >= 1 (got 0)"),
    ("job", {"max_error_fraction": 1.5}, "job.max_error_fraction: must be <= 1 (got 1.5)"),
    ("input", {"path": "x", "storage": {"access_key_id": "k"}}, "input.storage: access_key_id and secret"),
])
def test_invalid_values_name_the_field(section, value, expected):
    data = base()
    data[section] = {**data.get(section, {}), **value}
    found = problems(data)
    assert any(p.startswith(expected) for p in found), found


def test_missing_required_fields_are_listed_together():
    found = problems({"input": {}, "output": {"path": "o"}})
    assert "input.path: required field is missing" in found
    assert "engine: required field is missing" in found


def test_overrides_reach_nested_keys_and_parse_yaml_values():
    data = apply_overrides(base(), ["sampling.seed=7", "workers.concurrency=[1, 3]", "job.resume=false",
                                    "input.storage.endpoint_url=http://127.0.0.1:9"])
    cfg = validate_config(data)
    assert cfg.sampling.seed == 7 and cfg.workers.concurrency == [1, 3] and cfg.job.resume is False
    assert cfg.input.storage.endpoint_url == "http://127.0.0.1:9"
    with pytest.raises(ConfigError, match="expected key.path=value"):
        apply_overrides(base(), ["sampling.seed"])
    with pytest.raises(ConfigError, match="input.path is not a section"):
        apply_overrides(base(), ["input.path.x=1"])


def test_env_references_and_secrets_never_printed(monkeypatch):
    monkeypatch.setenv("REDRAFT_TEST_SECRET", "s3cr3t")
    data = base()
    data["input"]["storage"] = {"access_key_id": "AK", "secret_access_key": "${REDRAFT_TEST_SECRET}"}
    cfg = validate_config(data)
    assert cfg.input.storage.secret_access_key.get_secret_value() == "s3cr3t"
    dumped = json.dumps(cfg.redacted())
    assert "s3cr3t" not in dumped and "AK" in dumped
    data["input"]["storage"]["secret_access_key"] = "${REDRAFT_TEST_UNSET_VAR}"
    assert problems(data) == ["input.storage.secret_access_key: environment variable REDRAFT_TEST_UNSET_VAR is "
                              "not set (referenced as ${REDRAFT_TEST_UNSET_VAR})"]


def test_fingerprint_tracks_what_changes_rows_only():
    a = validate_config(base())
    b = validate_config(apply_overrides(base(), ["workers.batch_size=3", "job.max_error_fraction=0.5"]))
    c = validate_config(apply_overrides(base(), ["sampling.seed=1"]))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_shipped_configs_are_valid():
    from pipelines.serve_config import ServeConfig, load_serve_config

    paths = sorted((REPO / "configs").glob("*.yaml"))
    assert {p.name for p in paths} >= {"demo.yaml", "nightly_rewrite.yaml", "serve.yaml"}
    for path in paths:  # serve configs (redraft serve) have their own schema; every other one is a job config
        if path.name.startswith("serve"):
            assert isinstance(load_serve_config(path), ServeConfig)
        elif path.name.startswith("train_"):  # redraft train
            from pipelines.train import TrainConfig, load_train_config

            assert isinstance(load_train_config(path), TrainConfig)
        elif path.name.startswith("eval_"):  # redraft eval
            from pipelines.evaluate import EvalConfig, load_eval_config

            assert isinstance(load_eval_config(path), EvalConfig)
        else:
            assert isinstance(load_config(path), JobConfig)
    nightly = load_config(REPO / "configs" / "nightly_rewrite.yaml")
    assert nightly.task.kind == "rewrite" and nightly.input.path.startswith("s3://")


# --------------------------------------------------------------------------------------------- CLI

def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert "run" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for key, _, _ in describe_fields():
        assert key in text
    for flag in ("--set", "--check", "--json", "summary.json", "Exit codes"):
        assert flag in text


def test_cli_config_errors_exit_2_without_traceback(tmp_path, capsys):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(base()))
    assert main(["run", str(path), "--set", "sampling.entropy_bound=-1"]) == 2
    err = capsys.readouterr().err
    assert "job config error: sampling.entropy_bound: must be > 0" in err and "Traceback" not in err
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    path.write_text("input: [unclosed")
    assert main(["run", str(path)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["run", str(path), "--set", "novalue"]) == 2
    with pytest.raises(SystemExit) as exit_:
        main(["run"])
    assert exit_.value.code == 2


def test_cli_check_fails_fast_on_missing_checkpoint(tmp_path, capsys):
    data = base()
    data["engine"]["checkpoint"] = str(tmp_path / "no-such-checkpoint")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path), "--check"]) == 1
    err = capsys.readouterr().err
    assert "engine.checkpoint" in err and "directory not found" in err and "Traceback" not in err


def test_cli_check_plans_the_input(tmp_path, tiny_checkpoint, capsys):
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(5)))
    data = base()
    data["input"]["path"] = str(tmp_path / "in.jsonl")
    data["engine"]["checkpoint"] = str(tiny_checkpoint)
    data["output"] = {"path": str(tmp_path / "out"), "rows_per_file": 2}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path), "--check"]) == 0
    assert "5 rows in 1 input files -> 3 output files" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_demo_checkpoint_command(tmp_path, capsys):
    from engine.config import DiffusionGemmaConfig

    target = tmp_path / "demo-ckpt"
    assert main(["demo-checkpoint", str(target)]) == 0
    assert DiffusionGemmaConfig.from_dir(target) is not None and (target / "tokenizer.json").is_file()
    assert main(["demo-checkpoint", str(target)]) == 1
    assert "exists and is not an empty directory" in capsys.readouterr().err
    assert main(["demo-checkpoint", str(tmp_path / "x"), "--shape", "huge"]) == 2


def test_sampling_section_is_derived_from_sampling_params():
    """Defaults, bounds and the sampler choices come from ``engine.SamplingParams``: a value its check refuses
    is refused by the config too, naming the field."""
    from dataclasses import fields

    from pipelines.config import SamplingConfig

    assert list(SamplingConfig.model_fields) == [f.name for f in fields(SamplingParams)]
    assert SamplingConfig().model_dump() == SamplingParams().to_dict()
    for name, bad in (("max_new_tokens", 0), ("accept_threshold", 1.5), ("sampler", "beam"), ("seed", -1)):
        with pytest.raises(ValueError, match=f"SamplingParams.{name}"):
            SamplingParams(**{name: bad})
        with pytest.raises(ValidationError, match=name):
            SamplingConfig(**{name: bad})
