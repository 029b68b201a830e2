"""``redraft eval`` sweeps: the spec expands deterministically and is validated naming the field; quantized
settings are compared with full precision; a small sweep runs end to end through real infill jobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines.config import ConfigError
from pipelines.eval_sweep import EvalSweep, expand_sweep, quantization_deltas
from pipelines.evaluate import format_report, load_eval_config, run_eval

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "configs" / "models" / "code-tiny"


def _write(tmp_path, data) -> Path:
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _base(**extra):
    return {"models": [{"name": "m", "checkpoint": str(MODEL)}], **extra}


def test_sweep_expands_in_a_fixed_order():
    sweep = EvalSweep.model_validate({"samplers": {"top_k": [2, 1], "entropy_bound": [0.3]},
                                      "max_denoising_steps": [8, 16], "quantization": ["int8"]})
    settings = expand_sweep(sweep)
    assert [s.name for s in settings] == [
        "entropy_bound=0.3,steps=8", "top_k=2,steps=8", "top_k=1,steps=8",
        "entropy_bound=0.3,steps=16", "top_k=2,steps=16", "top_k=1,steps=16",
        "entropy_bound=0.3,steps=8,int8", "top_k=2,steps=8,int8", "top_k=1,steps=8,int8",
        "entropy_bound=0.3,steps=16,int8", "top_k=2,steps=16,int8", "top_k=1,steps=16,int8"]
    assert settings[1].sampling == {"sampler": "top_k", "accept_k": 2, "max_denoising_steps": 8}
    assert settings[0].sampling == {"sampler": "entropy_bound", "entropy_bound": 0.3, "max_denoising_steps": 8}
    assert [s.quantization for s in settings] == ["none"] * 6 + ["int8"] * 6
    assert expand_sweep(sweep) == settings


def test_sweep_replaces_the_default_setting_and_keeps_given_ones(tmp_path):
    sweep = {"samplers": {"confidence": [0.9, 0.5]}}
    cfg = load_eval_config(_write(tmp_path, _base(sweep=sweep)))
    assert [s.name for s in cfg.settings] == ["confidence=0.9", "confidence=0.5"]
    assert cfg.settings[1].sampling == {"sampler": "confidence", "accept_threshold": 0.5}
    cfg = load_eval_config(_write(tmp_path, _base(sweep=sweep, settings=[{"name": "mine"}])))
    assert [s.name for s in cfg.settings] == ["mine", "confidence=0.9", "confidence=0.5"]


@pytest.mark.parametrize("extra,field", [
    ({"sweep": {"samplers": {"greedy": [1]}}}, "sweep.samplers.greedy: unknown field"),
    ({"sweep": {"samplers": {"confidence": [0.9, 1.5]}}}, "sweep.samplers.confidence.1: must be <= 1"),
    ({"sweep": {"samplers": {"top_k": [0]}}}, "sweep.samplers.top_k.0: must be >= 1"),
    ({"sweep": {"samplers": {"top_k": [2.5]}}}, "sweep.samplers.top_k.0"),
    ({"sweep": {"samplers": {}}}, "sweep.samplers: name at least one sampler"),
    ({"sweep": {"samplers": {"top_k": [1]}, "quantization": ["int4"]}}, "sweep.quantization.0"),
    ({"sweep": {"samplers": {"top_k": [1]}, "max_denoising_steps": [0]}}, "sweep.max_denoising_steps.0"),
    ({"settings": [{"name": "a", "sampling": {"sampler": "greedy"}}]}, "settings[0] (a): sampling.sampler"),
    ({"settings": [{"name": "a", "sampling": {"accept_k": 0}}]}, "settings[0] (a): sampling.accept_k"),
    ({"settings": [{"name": "a"}, {"name": "a"}]}, "settings[1].name: 'a' is used twice"),
])
def test_bad_sweeps_name_the_field(tmp_path, extra, field):
    with pytest.raises(ConfigError) as err:
        load_eval_config(_write(tmp_path, _base(**extra)))
    assert any(p.startswith(field) for p in err.value.problems), err.value.problems


def test_quantization_deltas_pair_the_same_sampling_at_full_precision():
    def r(name, q, sampling, em, ta, cs):
        return {"name": name, "model": "m", "quantization": q, "sampling": sampling, "exact_match": em,
                "token_accuracy": ta, "char_similarity": cs}
    a, b = {"sampler": "top_k", "accept_k": 1}, {"sampler": "top_k", "accept_k": 2}
    results = [r("a", "none", a, 0.5, 0.5, 0.5), r("b", "none", b, 0.2, 0.2, 0.2),
               r("b8", "int8", b, 0.1, 0.25, 0.2), r("a8", "fp8", dict(reversed(a.items())), 0.5, 0.4, 0.75)]
    got = {d["name"]: d for d in quantization_deltas(results)}
    assert got["b8"]["against"] == "b" and got["a8"]["against"] == "a"
    assert got["b8"]["delta_exact_match"] == pytest.approx(-0.1)
    assert got["b8"]["delta_token_accuracy"] == pytest.approx(0.05)
    assert got["a8"]["delta_char_similarity"] == pytest.approx(0.25) and got["a8"]["quantization"] == "fp8"


@pytest.mark.slow
def test_small_sweep_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = load_eval_config(_write(tmp_path, _base(
        holes=6, random_baseline=False, prefix_only=True, output=str(tmp_path / "out"), batch_size=8,
        sampling={"max_denoising_steps": 4},
        sweep={"samplers": {"entropy_bound": [0.1, 1.0], "top_k": [1, 8]}, "quantization": ["none", "int8"]})))
    report = run_eval(cfg)
    names = [r["name"] for r in report["results"]]
    assert names == ["m@entropy_bound=0.1", "m-prefix-only@entropy_bound=0.1", "m@entropy_bound=1", "m@top_k=1",
                     "m@top_k=8", "m@entropy_bound=0.1,int8", "m@entropy_bound=1,int8", "m@top_k=1,int8",
                     "m@top_k=8,int8"]
    by = {r["name"]: r for r in report["results"]}
    for r in report["results"]:
        assert r["holes"] == 6 and r["errors"] == 0 and r["self_correction_share"] >= 0
        assert 0 < r["passes_per_canvas"] <= 4
    # one position per pass at most (clamps aside) against up to eight: top_k=1 needs at least 24/4 tokens a pass
    # to fill in time, so it fills fewer tokens per pass than top_k=8
    assert by["m@top_k=1"]["tokens_per_pass"] < by["m@top_k=8"]["tokens_per_pass"]
    assert len(report["quantization_deltas"]) == 4
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["quantization_deltas"] == report["quantization_deltas"]
    assert "corr/tok" in format_report(report)
