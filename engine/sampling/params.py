"""Sampling parameters of the renoising samplers (defaults are DiffusionGemma's reference ones)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import Field, asdict, dataclass, field, fields

from .accept import SAMPLERS

# the knob only one sampler reads; a digest leaves out the other samplers' knobs, so that changing one that is not
# used changes nothing, and an entropy_bound digest is the one from before samplers were selectable
_KNOBS = {"entropy_bound": "entropy_bound", "confidence": "accept_threshold", "top_k": "accept_k"}


def _knob(default, doc: str, **bounds):
    """A field with its user-facing description and bounds (``ge``, ``gt``, ``le``, ``lt``, ``choices``): the
    one place they live. ``__post_init__`` checks them; the job and Serve configs' ``sampling`` section is built
    from them (``pipelines/config.py``)."""
    return field(default=default, metadata={"doc": doc, **bounds})


_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def knob_type(f: Field) -> type:
    return _TYPES[f.type] if isinstance(f.type, str) else f.type


def knob_ok(f: Field, value) -> bool:
    kind, m = knob_type(f), f.metadata
    if kind is bool or isinstance(value, bool):  # YAML's true is not the number 1
        return kind is bool and isinstance(value, bool)
    if kind is str:
        return isinstance(value, str) and ("choices" not in m or value in m["choices"])
    if not isinstance(value, int if kind is int else (int, float)):
        return False
    return _in_bounds(value, m)


def _in_bounds(value, m) -> bool:
    return (("ge" not in m or value >= m["ge"]) and ("gt" not in m or value > m["gt"])
            and ("le" not in m or value <= m["le"]) and ("lt" not in m or value < m["lt"]))


def knob_allowed(f: Field) -> str:
    """The allowed values in words, e.g. 'an integer from 1 to 1000000'."""
    kind, m = knob_type(f), f.metadata
    if "choices" in m:
        return ", ".join(m["choices"])
    if kind is bool:
        return "true or false"
    noun = "an integer" if kind is int else "a number"
    low = ("ge", m["ge"]) if "ge" in m else ("gt", m["gt"]) if "gt" in m else None
    high = ("le", m["le"]) if "le" in m else ("lt", m["lt"]) if "lt" in m else None
    if low and high and low[0] == "ge" and high[0] == "le":
        return f"{noun} from {low[1]} to {high[1]}"
    if low and high:
        return f"{noun} in {'[' if low[0] == 'ge' else '('}{low[1]}, {high[1]}{']' if high[0] == 'le' else ')'}"
    bound = low or high
    return f"{noun} {dict(ge='>=', gt='>', le='<=', lt='<')[bound[0]]} {bound[1]}" if bound else noun


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

    max_new_tokens: int = _knob(256, "Tokens to generate at most per row.", ge=1, le=1_000_000)
    max_denoising_steps: int = _knob(48, "Denoising passes per canvas at most.", ge=1, le=10_000)
    sampler: str = _knob("entropy_bound", "Which positions a denoising pass accepts (the rest are renoised): "
                         "'entropy_bound' (the reference: an entropy budget), 'confidence' (top probability >= "
                         "accept_threshold, at least one per pass) or 'top_k' (the accept_k most confident). Ignored "
                         "by engine.backend 'vllm'.", choices=SAMPLERS)
    entropy_bound: float = _knob(0.1, "(sampler 'entropy_bound') Entropy budget of the positions accepted per "
                                 "pass; higher accepts more tokens per pass (faster, rougher).", gt=0)
    accept_threshold: float = _knob(0.9, "(sampler 'confidence') Top probability a position needs to be "
                                    "accepted; lower accepts more tokens per pass.", gt=0, le=1)
    accept_k: int = _knob(4, "(sampler 'top_k') Positions accepted per pass (the highest top probabilities; "
                          "clamped positions do not count).", ge=1)
    t_max: float = _knob(0.8, "Temperature of the first pass.", gt=0)
    t_min: float = _knob(0.4, "Temperature of the last pass (<= t_max).", gt=0)
    stability_threshold: int = _knob(1, "A canvas stops early once its argmax is unchanged for this many "
                                     "passes ...", ge=0)
    confidence_threshold: float = _knob(0.005, "... and its mean entropy is below this.", ge=0)
    fixed_steps: bool = _knob(False, "Always run max_denoising_steps passes (benchmarks).")
    ignore_eos: bool = _knob(False, "Keep generating after end-of-sequence (benchmarks).")
    seed: int = _knob(0, "Base seed; each row's seed is derived from it and the row's id, so a row's output does "
                      "not depend on batching or on resuming.", ge=0, lt=2**63)

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not knob_ok(f, value):
                raise ValueError(f"SamplingParams.{f.name}: got {value!r}; allowed: {knob_allowed(f)}")
        if self.t_min > self.t_max:
            raise ValueError(f"SamplingParams.t_min: got {self.t_min!r}; allowed: a number <= t_max ({self.t_max})")

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
