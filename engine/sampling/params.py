"""Sampling parameters of the entropy-bounded renoising sampler (defaults are DiffusionGemma's reference ones)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class SamplingParams:
    """How one generate call samples.

    Args:
        max_new_tokens: tokens to generate at most; spread over ``ceil(max_new_tokens / canvas_length)`` canvases.
        max_denoising_steps: denoising passes per canvas at most (the reference default is 48).
        entropy_bound: accept the lowest-entropy positions while their summed entropy, less the largest, stays
            within this bound (higher accepts more tokens per pass).
        t_max, t_min: temperature falls linearly from ``t_max`` (first pass) towards ``t_min`` (last pass).
        stability_threshold: a row stops once its argmax canvas is unchanged for this many passes ...
        confidence_threshold: ... and its mean per-position entropy is below this.
        fixed_steps: run exactly ``max_denoising_steps`` passes per canvas, no early stop (for benchmarks).
        ignore_eos: keep generating after an end-of-sequence token (benchmarks; the text still ends at EOS
            unless this is set).
        seed: seed of every random draw (initial canvas, samples, renoising) of a row.
    """

    max_new_tokens: int = 256
    max_denoising_steps: int = 48
    entropy_bound: float = 0.1
    t_max: float = 0.8
    t_min: float = 0.4
    stability_threshold: int = 1
    confidence_threshold: float = 0.005
    fixed_steps: bool = False
    ignore_eos: bool = False
    seed: int = 0

    def __post_init__(self):
        def check(name, ok, allowed):
            value = getattr(self, name)
            if not ok(value):
                raise ValueError(f"SamplingParams.{name}: got {value!r}; allowed: {allowed}")

        is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
        is_num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
        check("max_new_tokens", lambda v: is_int(v) and 1 <= v <= 1_000_000, "an integer from 1 to 1000000")
        check("max_denoising_steps", lambda v: is_int(v) and 1 <= v <= 10_000, "an integer from 1 to 10000")
        check("entropy_bound", lambda v: is_num(v) and v > 0, "a number > 0")
        check("t_max", lambda v: is_num(v) and v > 0, "a number > 0")
        check("t_min", lambda v: is_num(v) and 0 < v, "a number > 0 (and <= t_max)")
        check("t_min", lambda v: v <= self.t_max, f"a number <= t_max ({self.t_max})")
        check("stability_threshold", lambda v: is_int(v) and v >= 0, "an integer >= 0")
        check("confidence_threshold", lambda v: is_num(v) and v >= 0, "a number >= 0")
        check("fixed_steps", lambda v: isinstance(v, bool), "true or false")
        check("ignore_eos", lambda v: isinstance(v, bool), "true or false")
        check("seed", lambda v: is_int(v) and 0 <= v < 2**63, "an integer from 0 to 2**63-1")

    def temperature(self, step_remaining: int) -> float:
        """Temperature at a pass, counting passes remaining from ``max_denoising_steps`` down to 1."""
        return self.t_min + (self.t_max - self.t_min) * (step_remaining / self.max_denoising_steps)

    def to_dict(self) -> dict:
        return asdict(self)

    def digest(self) -> str:
        """Short stable hash of the parameters (for output rows)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
