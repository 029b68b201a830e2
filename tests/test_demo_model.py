"""The demo model shipped in configs/models/code-tiny: what is trained is what is served, and the demo runs on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.pipeline_fixtures import ray_cluster  # noqa: F401 - a fixture

from engine import DiffusionEngine

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "configs" / "models" / "code-tiny"


def test_shipped_model_is_small_and_complete():
    names = {p.name for p in SHIPPED.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "training.json"} <= names
    assert sum(p.stat().st_size for p in SHIPPED.iterdir()) < 25 * 2**20
    training = json.loads((SHIPPED / "training.json").read_text())
    assert training["corpus"].startswith("Python standard library")


def test_shipped_model_matches_transformers():
    transformers = pytest.importorskip("transformers")
    ref = transformers.DiffusionGemmaForBlockDiffusion.from_pretrained(SHIPPED).eval()
    engine = DiffusionEngine.from_pretrained(SHIPPED, device="cpu", dtype=torch.float32)
    prompt = engine.encode_prompts(["def add(a, b):\n    return"])[0]
    assert len(prompt) > 3
    canvas = torch.randint(0, ref.config.text_config.vocab_size, (1, engine.config.canvas_length),
                           generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        theirs = ref(input_ids=torch.tensor([prompt]), decoder_input_ids=canvas).logits
    torch.testing.assert_close(engine.canvas_logits([prompt], canvas), theirs, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_redraft_demo_runs_on_the_shipped_model(ray_cluster, tmp_path, monkeypatch, capsys):
    from pipelines.cli import main

    monkeypatch.chdir(REPO)
    assert main(["demo", "--only", "lines", "--only", "edit", "--out", str(tmp_path),
                 "--set", "sampling.max_denoising_steps=4"]) == 0
    out = capsys.readouterr().out
    assert "== lines: line infill" in out and "== edit: span edit" in out and "demo summary:" in out
    assert "8 ok, 0 error rows" in out and "4 ok, 0 error rows" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edit", "lines"]
