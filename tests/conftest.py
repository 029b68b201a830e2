"""Shared fixtures: tiny random DiffusionGemma checkpoints written once per test session."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def checkpoint_factory(tmp_path_factory):
    """``make(name="base", **kwargs) -> (path, reference_model)``, cached per argument set."""
    from benchmarks.checkpoints import make_tiny_checkpoint

    cache: dict = {}

    def make(name: str = "base", **kwargs):
        key = (name, tuple(sorted(kwargs.items())))
        if key not in cache:
            path = tmp_path_factory.mktemp(f"ckpt_{name}")
            cache[key] = (path, make_tiny_checkpoint(path, name, **kwargs))
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(checkpoint_factory):
    return checkpoint_factory("base")[0]


@pytest.fixture(scope="session")
def tiny_engine(tiny_checkpoint):
    from engine import DiffusionEngine

    return DiffusionEngine.from_pretrained(tiny_checkpoint, device="cpu", dtype=torch.float32)
