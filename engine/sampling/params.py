"""Sampling parameters of the renoising samplers (defaults are DiffusionGemma's reference ones)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from .accept import SAMPLERS

# the knob only one sampler reads; a digest leaves out the other samplers' knobs, so that changing one that is not
# used changes nothing, and an entropy_bound digest is the one from before samplers were selectable
_KNOBS = {"entropy_bound": "entropy_bound", "confidence": "accept_threshold", "top_k": "accept_k"}


@dataclass(frozen=True)
class SamplingParams:
    """How one generate call samples.

    Args:
        max_new_tokens: tokens to generate at most; spread over ``ceil(max_new_tokens / canvas_length)`` canvases.
        max_denoising_steps: denoising passes per canvas at most (the reference default is 48).
        sampler: which positions a pass accepts (``engine/sampling/accept.py``): ``entropy_bound`` (the reference),
            ``confidence`` (top probability >= ``accept_threshold``, at least one per pass) or ``top_k`` (the
            ``accept_k`` most confident positions).
        entropy_bound: (``entropy_bound`` sampler) accept the lowest-entropy positions while their summed entropy, less the largest, stays
            within this bound (higher accepts more tokens per pass).
        accept_threshold: (``confidence`` sampler) top probability, at the pass temperature, a position needs.
        accept_k: (``top_k`` sampler) positions accepted per pass, besides settled (zero-entropy) ones.
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
    sampler: str = "entropy_bound"
    entropy_bound: float = 0.1
    accept_threshold: float = 0.9
    accept_k: int = 4
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
        check("sampler", lambda v: v in SAMPLERS, ", ".join(SAMPLERS))
        check("entropy_bound", lambda v: is_num(v) and v > 0, "a number > 0")
        check("accept_threshold", lambda v: is_num(v) and 0 < v <= 1, "a number in (0, 1]")
        check("accept_k", lambda v: is_int(v) and v >= 1, "an integer >= 1")
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

    def output_fields(self) -> dict:
        """The parameters that can change an output: every field but the knobs of samplers not in use (and,
        for the default ``entropy_bound`` sampler, ``sampler`` itself)."""
        unused = {k for s, k in _KNOBS.items() if s != self.sampler}
        if self.sampler == "entropy_bound":
            unused.add("sampler")
        return {k: v for k, v in self.to_dict().items() if k not in unused}

    def digest(self) -> str:
        """Short stable hash of ``output_fields()`` (the rows' ``sampling_hash``)."""
        return hashlib.sha256(json.dumps(self.output_fields(), sort_keys=True).encode()).hexdigest()[:16]
