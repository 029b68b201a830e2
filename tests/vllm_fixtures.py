"""The tiny random Llama checkpoint of the vLLM backend's tests, as a session fixture (the checkpoint writer lives
in ``benchmarks._fixtures``, which the vLLM benchmark uses too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks._fixtures import BOS_ID, EOS_ID, PAD_ID, make_tiny_llama_checkpoint  # noqa: F401


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A tiny random Llama checkpoint, written once per test session."""
    return make_tiny_llama_checkpoint(tmp_path_factory.mktemp("tiny-llama"))
