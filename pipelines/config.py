"""The job config: YAML in, ``--set key.path=value`` overrides, validated by pydantic, turned into engine
dataclasses in one place (``JobConfig.sampling_params``).

Every field carries a description (``redraft run --help`` and the README list them). An invalid config raises
``ConfigError`` whose lines name each offending field, e.g. ``sampling.entropy_bound: must be > 0 (got -1)``.
String values may reference environment variables as ``${NAME}`` or ``${NAME:-default}`` (for secrets).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, field_validator

from .config_base import (BATCH_INVARIANT_SCOPE, ConfigError, InputConfig, NoBoolNumbers,  # noqa: F401
                          OutputConfig, StorageConfig, _describe, _Model)
from .task_config import TaskConfig


# Task kinds an autoregressive backend can run: both read the prompt left to right and write after it. The
# editing kinds (infill, edit, structured) need redraft's bidirectional canvas.
VLLM_TASK_KINDS = ("generate", "rewrite")


class VLLMConfig(_Model):
    """Settings of the 'vllm' backend (an autoregressive model run by vLLM; the ``vllm`` extra)."""

    max_model_len: int | None = Field(
        default=None, ge=16, description="Context length vLLM runs with (prompt + output tokens). Default: the "
        "checkpoint's max_position_embeddings. Prompts longer than this minus sampling.max_new_tokens are error rows.")
    temperature: float = Field(
        default=0.0, ge=0, description="Sampling temperature; 0 is greedy (the same output for a row on every run). "
        "Above 0 each row samples with its own seed (from sampling.seed and the row id).")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling: keep the smallest set of tokens "
                         "whose probability reaches this (1: all).")
    max_num_seqs: int | None = Field(
        default=None, ge=1, description="Rows one vLLM engine decodes together at most. Default: vLLM's.")
    cpu_kv_cache_gib: float = Field(
        default=4.0, gt=0, description="CPU only: GiB of memory for vLLM's KV cache per engine actor "
        "(VLLM_CPU_KVCACHE_SPACE). Set, because without it vLLM reserves 92% of the node's memory and refuses to "
        "start when other processes use more than 8%.")
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Further vllm.EngineArgs keyword arguments, passed through as given "
        "(e.g. {tensor_parallel_size: 2, quantization: fp8}).")


class EngineConfig(_Model):
    backend: str = Field(default="redraft", description="Inference backend: 'redraft' (this project's diffusion "
                         "engine, every task kind) or 'vllm' (an autoregressive Hugging Face model served by vLLM in "
                         "the same job; task.kind 'generate' or 'rewrite'; needs pip install 'redraft[vllm]'). With "
                         "'vllm', sampling.max_new_tokens, ignore_eos and seed apply, the denoising settings "
                         "(max_denoising_steps, entropy_bound, t_max, t_min, stability_threshold, "
                         "confidence_threshold, fixed_steps) are ignored, and engine.vllm.* holds the rest.")
    checkpoint: str = Field(description="Local directory of a checkpoint in the Hugging Face layout (config.json, "
                            "*.safetensors, tokenizer.json): DiffusionGemma for 'redraft', a vLLM-supported "
                            "autoregressive model for 'vllm'; must exist on every worker node.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="'auto': CUDA when the worker was given a GPU, else CPU.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Weight and activation dtype; 'auto': bfloat16 on CUDA, float32 on CPU.")
    quantization: Literal["none", "int8", "fp8"] = Field(
        default="none", description="Routed-expert weights (90% of the model) stored at one byte each with "
        "per-channel scales: 'int8' (any device; saves memory), 'fp8' (FP8 tensor cores on Hopper GPUs, elsewhere "
        "dequantized per call like int8). Outputs differ slightly from 'none'.")
    batch_invariant: bool = Field(default=False, description=
        "A row's text depends only on its input, seed, sampling and checkpoint, never on the rows beside it in "
        "a batch, the batch size, max_inflight or where a resumed job regrouped rows (fixed-shape matrix tiles, "
        "always-masked attention; engine/layers/invariant.py). Runs at 0.33-0.53x the tokens/s on CPU (README, "
        "'Batch-invariant rows'), so it is off by default; off, a draw near a boundary can flip with the batch.")

    vllm: VLLMConfig = Field(default_factory=VLLMConfig, description="Settings of the 'vllm' backend.")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value):
        if value not in ("redraft", "vllm"):
            raise ValueError(f"unknown backend {value!r}; choose 'redraft' or 'vllm'")
        return value


class _SamplingBase(_Model):
    """The ``sampling`` section: one field per ``engine.SamplingParams`` field, with its default, bounds and
    description taken from there (``_sampling_config``), so nothing is copied by hand."""

    @field_validator("t_min", check_fields=False)
    @classmethod
    def _t_min_below_t_max(cls, value, info):
        t_max = info.data.get("t_max")
        if t_max is not None and value > t_max:
            raise ValueError(f"must be <= t_max ({t_max})")
        return value


def _sampling_config() -> type[_SamplingBase]:
    from dataclasses import fields

    from engine.sampling.params import SamplingParams, knob_type

    spec = {}
    for f in fields(SamplingParams):
        m = f.metadata
        kind = Literal[tuple(m["choices"])] if "choices" in m else knob_type(f)
        bounds = {k: m[k] for k in ("ge", "gt", "le", "lt") if k in m}
        spec[f.name] = (kind, Field(default=f.default, description=m["doc"], **bounds))
    return create_model("SamplingConfig", __base__=_SamplingBase, __module__=__name__, **spec)


SamplingConfig = _sampling_config()


def _sampling_output_fields(sampling: SamplingConfig) -> dict:
    """The sampling fields that can change an output row (unused samplers' knobs left out, as in the rows'
    ``sampling_hash``), so a resume is not refused over a knob no row reads."""
    from .convert import sampling_params

    return sampling_params(sampling).output_fields()


class WorkersConfig(_Model):
    batch_size: int = Field(default=128, ge=1, le=100_000, description="Rows per engine call (per actor batch; "
                            "also the unit that is saved for resume). Keep it a few times max_inflight so that rows "
                            "are waiting to take the place of finished ones.")
    max_inflight: int = Field(default=32, ge=1, le=4096, description="Canvases each actor denoises together "
                              "(step-level continuous batching): the batch's rows queue, and a row takes a finished "
                              "row's place in the decoder batch at once. Larger uses the GPU better and needs more "
                              "memory (about one fp32 [max_inflight, canvas_length, vocab] logits tensor per step).")
    concurrency: int | list[int] | None = Field(
        default=None, description="Engine actors: a number, or [min, max] to autoscale. Default: one per GPU "
        "on GPU clusters, 1 on CPU-only clusters.")
    num_gpus: float | None = Field(
        default=None, ge=0, description="GPUs per actor. Default: 1 when the Ray cluster has GPUs and "
        "engine.device is not 'cpu', else 0.")
    num_cpus: float = Field(default=1, gt=0, description="CPUs per actor (also its torch thread count on CPU).")
    max_task_retries: int = Field(
        default=3, ge=-1, description="Times a batch is retried when its actor dies (-1: forever). Retried "
        "batches never duplicate rows.")
    max_restarts: int = Field(default=-1, ge=-1, description="Times a dead actor is restarted (-1: forever).")

    @field_validator("concurrency", mode="before")
    @classmethod
    def _concurrency_shape(cls, value):
        is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
        if value is None:
            return value
        if is_int(value):
            if value < 1:
                raise ValueError(f"must be >= 1 (got {value})")
            return value
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(is_int(v) for v in value):
            lo, hi = value
            if lo < 1 or hi < lo:
                raise ValueError(f"[min, max] needs 1 <= min <= max (got [{lo}, {hi}])")
            return list(value)
        raise ValueError(f"must be an integer or [min, max] (got {value!r})")


class JobSettings(_Model):
    name: str = Field(default="redraft-job", min_length=1, description="Job name (shown in logs and the summary).")
    max_error_fraction: float = Field(
        default=0.1, ge=0, le=1, description="The job exits non-zero when more than this fraction of rows "
        "are error rows (all rows are still written).")
    resume: bool = Field(
        default=True, description="true: continue a previous run of this job in output.path, skipping rows "
        "already done. false: delete redraft's files in output.path (part-*.parquet, summary.json, _redraft/) "
        "and start over.")
    max_attempts: int = Field(
        default=3, ge=1, le=100, description="Times the job runs its rows before it gives up when Ray loses a "
        "worker node, an actor or an object and its own retries are spent: each new attempt resumes from the rows "
        "already staged (logged, and counted in summary.json's 'attempts'). Config, input and checkpoint errors "
        "and Ctrl-C / SIGTERM are never retried. 1: no retry.")


class JobConfig(_Model):
    input: InputConfig = Field(description="Where the corpus is read from.")
    output: OutputConfig = Field(description="Where the results are written.")
    task: TaskConfig = Field(default_factory=TaskConfig, description="What to do with each row.")
    engine: EngineConfig = Field(description="The model and where it runs.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Sampler settings.")
    workers: WorkersConfig = Field(default_factory=WorkersConfig, description="Ray actor pool settings.")
    job: JobSettings = Field(default_factory=JobSettings, description="Job-level settings.")

    @field_validator("engine")
    @classmethod
    def _backend_runs_task(cls, engine, info):
        task = info.data.get("task")
        if engine.backend == "vllm" and task is not None and task.kind not in VLLM_TASK_KINDS:
            raise ValueError(f".backend: 'vllm' runs an autoregressive model, which cannot do task.kind "
                             f"{task.kind!r} (it needs redraft's bidirectional canvas); use engine.backend 'redraft' "
                             f"or task.kind {' or '.join(map(repr, VLLM_TASK_KINDS))}")
        if engine.backend == "vllm" and engine.quantization != "none":
            raise ValueError(".quantization: redraft's expert quantization is for engine.backend 'redraft'; for "
                             "'vllm' set engine.vllm.engine_kwargs.quantization")
        if engine.batch_invariant and (engine.backend == "vllm" or engine.quantization != "none"):
            raise ValueError(f".batch_invariant: {BATCH_INVARIANT_SCOPE}")
        return engine

    def output_storage(self) -> StorageConfig:
        return self.output.storage if self.output.storage is not None else self.input.storage

    def sampling_params(self):
        """The engine's ``SamplingParams`` for this job (the one place config becomes engine dataclasses); for
        engine.backend 'vllm', a ``workers.vllm_worker.VLLMSampling``."""
        from .convert import sampling_params, vllm_sampling

        if self.engine.backend == "vllm":
            return vllm_sampling(self)

        return sampling_params(self.sampling)

    def redacted(self) -> dict:
        """The config as plain data with secrets masked (for summary.json and logs)."""
        return json.loads(self.model_dump_json())  # SecretStr dumps as '**********'

    def fingerprint_fields(self) -> dict:
        """What must not change between a run and its resume: anything that changes an output row."""
        return {
            "input": self.input.model_dump(include={"path", "format", "id_column", "text_column"}),
            "output.rows_per_file": self.output.rows_per_file,
            "task": self.task.model_dump(),
            "engine": self.engine.model_dump(include={"backend", "checkpoint", "dtype", "quantization"}
                                             | ({"vllm"} if self.engine.backend == "vllm" else set())
                                             # only when on: jobs staged before the setting existed still resume
                                             | ({"batch_invariant"} if self.engine.batch_invariant else set())),
            "sampling": _sampling_output_fields(self.sampling),
        }

    def fingerprint(self) -> str:
        blob = json.dumps(self.fingerprint_fields(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------- loading

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(value: Any, where: str, problems: list[str]) -> Any:
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{where}.{k}" if where else str(k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if isinstance(value, str):
        def sub(m):
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            problems.append(f"{where}: environment variable {name} is not set (referenced as ${{{name}}})")
            return ""

        return _ENV_REF.sub(sub, value)
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'sampling.seed=3'`` -> ``(['sampling', 'seed'], 3)``; the value is read as YAML (numbers, booleans,
    null, lists), so ``--set workers.concurrency=[1,4]`` works."""
    if "=" not in text:
        raise ConfigError([f"--set {text}: expected key.path=value"])
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError([f"--set {text}: bad key path {key!r}"])
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError([f"--set {text}: {'.'.join(parts[:i + 1])} is not a section"])
            node = child
        node[parts[-1]] = value
    return data


def validate_config(data: Any) -> JobConfig:
    """Validate plain data (parsed YAML plus overrides) into a ``JobConfig``; raises ``ConfigError``."""
    if not isinstance(data, dict):
        raise ConfigError([f"config: expected a mapping of sections, got {type(data).__name__}"])
    problems: list[str] = []
    data = _expand_env(data, "", problems)
    if problems:
        raise ConfigError(problems)
    try:
        return JobConfig.model_validate(data)
    except ValidationError as err:
        lines = list(dict.fromkeys(_describe(e, JobConfig) for e in err.errors()))
        raise ConfigError(lines) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> JobConfig:
    """Read a YAML job config, apply ``--set`` overrides, validate. Raises ``ConfigError``."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found"]) from None
    except OSError as err:
        raise ConfigError([f"{path}: cannot read config file ({err.strerror})"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError([f"{path}: not valid YAML: {err}"]) from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping of sections (input, output, engine, ...)"])
    return validate_config(apply_overrides(data, list(overrides or [])))


def describe_fields(model: type[BaseModel] = JobConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(key.path, default, description)`` for every leaf field, for ``--help`` and docs."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        ann = field.annotation
        args = getattr(ann, "__args__", ()) or (ann,)
        nested = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if nested and not field.is_required() and field.default is None:
            rows.append((f"{key}.*", "", field.description or ""))
            continue
        if nested:
            rows.extend(describe_fields(nested[0], key + "."))
            continue
        if field.is_required():
            default = "(required)"
        elif field.default_factory is not None:
            default = ""
        else:
            default = json.dumps(field.default) if not isinstance(field.default, str) else field.default
        rows.append((key, default, field.description or ""))
    return rows
