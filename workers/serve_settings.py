"""What one Serve replica needs, as plain values: built from the validated Serve config by
``pipelines/convert.py`` (``serve_settings``), so the replica imports no configuration code."""

from __future__ import annotations

from dataclasses import dataclass

from engine.sampling.params import SamplingParams


@dataclass(frozen=True)
class ServeSettings:
    checkpoint: str  # absolute path
    device: str  # 'auto', 'cpu' or 'cuda' (resolved by the engine)
    dtype: str  # 'auto' or a dtype name (resolved by the engine)
    quantization: str
    num_threads: int | None  # torch threads of a CPU replica
    model_name: str
    sampling: SamplingParams  # the server's defaults; each request may narrow max_tokens, temperature, seed
    max_tokens_limit: int
    max_body_bytes: int
    max_prompts_per_request: int
    max_request_tokens: int
    max_batch_size: int
    batch_wait_timeout_s: float
    batch_invariant: bool = False  # rows independent of their batch mates (engine.batch_invariant)
