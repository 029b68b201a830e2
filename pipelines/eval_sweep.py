"""Sweeps for ``redraft eval``: a compact spec that expands into settings, and the quantization deltas.

``sweep: {samplers: {entropy_bound: [0.05, 0.3], confidence: [0.9, 0.5], top_k: [1, 4]},
max_denoising_steps: [8, 16], quantization: [none, int8]}`` expands, in that fixed order (precision, then
pass budget, then sampler: entropy_bound, confidence, top_k; then knob value in the order written), into one setting per
combination: each sampler's main knob (``entropy_bound``, ``accept_threshold``, ``accept_k``), the pass budget
and the weight precision (``engine.quantization`` of the fill jobs).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from .config import _Model

KNOB = {"entropy_bound": "entropy_bound", "confidence": "accept_threshold", "top_k": "accept_k"}
METRICS = ("exact_match", "token_accuracy", "char_similarity")
Precision = Literal["none", "int8", "fp8"]


class SweepSamplers(_Model):
    entropy_bound: list[Annotated[float, Field(gt=0)]] | None = Field(
        default=None, description="Entropy bounds to try (sampler 'entropy_bound').")
    confidence: list[Annotated[float, Field(gt=0, le=1)]] | None = Field(
        default=None, description="accept_threshold values to try (sampler 'confidence').")
    top_k: list[Annotated[int, Field(ge=1)]] | None = Field(
        default=None, description="accept_k values to try (sampler 'top_k').")


class EvalSweep(_Model):
    samplers: SweepSamplers = Field(description="Per sampler, the values of its main knob.")
    max_denoising_steps: list[Annotated[int, Field(ge=1, le=10_000)]] | None = Field(
        default=None, min_length=1, description="Pass budgets to try (default: the sampling section's).")
    quantization: list[Precision] = Field(default=["none"], min_length=1, description="Expert-weight precisions "
                                          "to try; each quantized setting is compared with the same setting at "
                                          "full precision ('none' is added when left out).")


class EvalSetting(_Model):
    name: str = Field(description="Label in the report.")
    sampling: dict[str, Any] = Field(default_factory=dict, description="Overrides of the sampling section.")
    quantization: Precision = Field(default="none", description="engine.quantization of this setting's jobs.")


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def expand_sweep(sweep: EvalSweep) -> list[EvalSetting]:
    """The settings of ``sweep``, in its fixed order, named ``sampler=value[,steps=N][,int8]``."""
    precisions = list(dict.fromkeys(["none", *sweep.quantization]))
    steps = sweep.max_denoising_steps or [None]
    samplers = [(s, v) for s, v in sweep.samplers.model_dump().items() if v]
    if not samplers:
        raise ValueError("sweep.samplers: name at least one sampler with a list of knob values")
    settings = []
    for q in precisions:
        for n in steps:
            for sampler, values in samplers:
                for value in values:
                    sampling = {"sampler": sampler, KNOB[sampler]: value}
                    name = f"{sampler}={_fmt(value)}"
                    if n is not None:
                        sampling["max_denoising_steps"] = n
                        name += f",steps={n}" if len(steps) > 1 else ""
                    name += f",{q}" if q != "none" else ""
                    settings.append(EvalSetting(name=name, sampling=sampling, quantization=q))
    return settings


def quantization_deltas(results: list[dict]) -> list[dict]:
    """For each quantized result, its metrics less those of the same model and sampling at full precision."""
    full = {(r["model"], repr(sorted(r["sampling"].items()))): r for r in results if r["quantization"] == "none"}
    deltas = []
    for r in results:
        base = full.get((r["model"], repr(sorted(r["sampling"].items()))))
        if r["quantization"] == "none" or base is None:
            continue
        deltas.append({"name": r["name"], "against": base["name"], "quantization": r["quantization"],
                       **{f"delta_{m}": r[m] - base[m] for m in METRICS}})
    return deltas
