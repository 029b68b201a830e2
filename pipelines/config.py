"""The job config: YAML in, ``--set key.path=value`` overrides, validated by pydantic, turned into engine
dataclasses in one place (``JobConfig.sampling_params``).

Every field carries a description (``redraft run --help`` and the README list them). An invalid config raises
``ConfigError`` whose lines name each offending field, e.g. ``sampling.entropy_bound: must be > 0 (got -1)``.
String values may reference environment variables as ``${NAME}`` or ``${NAME:-default}`` (for secrets).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator


class ConfigError(Exception):
    """The job config is invalid; ``str(err)`` holds one ``field: problem`` line per issue."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StorageConfig(_Model):
    """How to reach an S3-compatible object store (ignored for local paths)."""

    endpoint_url: str | None = Field(
        default=None, description="S3 endpoint URL for S3-compatible stores (MinIO, Ceph, moto), e.g. "
        "'http://127.0.0.1:9000'. Default: $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL, else AWS itself.")
    region: str | None = Field(
        default=None, description="Bucket region. Default: $AWS_REGION / $AWS_DEFAULT_REGION, else 'us-east-1'.")
    access_key_id: str | None = Field(
        default=None, description="Access key id. Default: the standard AWS chain (env vars, ~/.aws, instance role).")
    secret_access_key: SecretStr | None = Field(
        default=None, description="Secret access key (never printed). Prefer '${ENV_VAR}' over a literal value.")
    session_token: SecretStr | None = Field(
        default=None, description="Session token for temporary credentials (never printed).")
    anonymous: bool = Field(default=False, description="Access public buckets without credentials.")

    @model_validator(mode="after")
    def _keys_in_pairs(self):
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key must be given together (or both left out)")
        return self


class InputConfig(_Model):
    path: str = Field(description="Input: a file, a directory (all .parquet / .jsonl files in it, recursively) "
                      "or a glob ('data/*.parquet'); local or 's3://bucket/prefix'.")
    format: Literal["parquet", "jsonl", "auto"] = Field(
        default="auto", description="File format; 'auto' picks it from each file's extension "
        "(.parquet/.pq, .jsonl/.ndjson/.json).")
    id_column: str | None = Field(
        default=None, description="Column holding each row's id (written as a string). Left out: a stable id "
        "'<file relative to the input root>:<row number>'.")
    text_column: str = Field(default="text", description="Column holding the text (prompt or document).")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Object-store settings for "
                                   "s3:// input.")


class OutputConfig(_Model):
    path: str = Field(description="Output directory, local or 's3://bucket/prefix': Parquet files "
                      "'part-FFFFF-RRRRRRRRR.parquet' (input file number, first row), summary.json, and a _redraft/ "
                      "folder for resume state.")
    storage: StorageConfig | None = Field(
        default=None, description="Object-store settings for s3:// output, the same keys as input.storage; "
        "left out: input.storage is used.")
    rows_per_file: int = Field(
        default=10_000, ge=1, le=10_000_000, description="Input rows per output file. Each output file is "
        "written whole, once all its rows are done; it is also the unit of work handed to a reader.")


class TaskConfig(_Model):
    kind: Literal["generate", "rewrite"] = Field(
        default="generate", description="'generate': the text is a prompt and the output continues it. "
        "'rewrite': the instruction (with the text in place of {text}) goes through the checkpoint's chat "
        "template and the output replaces the document.")
    instruction: str | None = Field(
        default=None, validate_default=True, description="Rewrite instruction; '{text}' marks where the "
        "document goes. Required for 'rewrite'.")
    max_input_chars: int = Field(
        default=20_000, ge=1, description="Rows whose text is longer than this become error rows (the engine "
        "also rejects prompts over the checkpoint's token limit).")

    @field_validator("instruction")
    @classmethod
    def _instruction_fits_kind(cls, value, info):
        kind = info.data.get("kind")
        if kind == "rewrite":
            if not value or not value.strip():
                raise ValueError("required when task.kind is 'rewrite'")
            if value.count("{text}") != 1:
                raise ValueError("must contain '{text}' exactly once (where the document goes)")
        elif value is not None and kind is not None:
            raise ValueError(f"only used by task.kind 'rewrite' (task.kind is {kind!r}); remove it")
        return value


class EngineConfig(_Model):
    backend: str = Field(default="redraft", description="Inference backend. Only 'redraft' (this project's "
                         "engine) for now; 'vllm' is reserved.")
    checkpoint: str = Field(description="Local directory of a DiffusionGemma checkpoint in the Hugging Face "
                            "layout (config.json, *.safetensors, tokenizer.json); must exist on every worker node.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="'auto': CUDA when the worker was given a GPU, else CPU.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Weight and activation dtype; 'auto': bfloat16 on CUDA, float32 on CPU.")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value):
        if value == "vllm":
            raise ValueError("'vllm' is reserved for a later release; only 'redraft' is available now")
        if value != "redraft":
            raise ValueError(f"unknown backend {value!r}; only 'redraft' is available")
        return value


class SamplingConfig(_Model):
    """Mirrors ``engine.SamplingParams`` (DiffusionGemma's reference defaults)."""

    max_new_tokens: int = Field(default=256, ge=1, le=1_000_000, description="Tokens to generate at most per row.")
    max_denoising_steps: int = Field(default=48, ge=1, le=10_000, description="Denoising passes per canvas at most.")
    entropy_bound: float = Field(default=0.1, gt=0, description="Entropy budget of the positions accepted per "
                                 "pass; higher accepts more tokens per pass (faster, rougher).")
    t_max: float = Field(default=0.8, gt=0, description="Temperature of the first pass.")
    t_min: float = Field(default=0.4, gt=0, description="Temperature of the last pass (<= t_max).")
    stability_threshold: int = Field(default=1, ge=0, description="A canvas stops early once its argmax is "
                                     "unchanged for this many passes ...")
    confidence_threshold: float = Field(default=0.005, ge=0, description="... and its mean entropy is below this.")
    fixed_steps: bool = Field(default=False, description="Always run max_denoising_steps passes (benchmarks).")
    ignore_eos: bool = Field(default=False, description="Keep generating after end-of-sequence (benchmarks).")
    seed: int = Field(default=0, ge=0, lt=2**63, description="Base seed; each row's seed is derived from it and "
                      "the row's id, so a row's output does not depend on batching or on resuming.")

    @field_validator("t_min")
    @classmethod
    def _t_min_below_t_max(cls, value, info):
        t_max = info.data.get("t_max")
        if t_max is not None and value > t_max:
            raise ValueError(f"must be <= t_max ({t_max})")
        return value


class WorkersConfig(_Model):
    batch_size: int = Field(default=32, ge=1, le=100_000, description="Rows per engine call (per actor batch).")
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


class JobConfig(_Model):
    input: InputConfig = Field(description="Where the corpus is read from.")
    output: OutputConfig = Field(description="Where the results are written.")
    task: TaskConfig = Field(default_factory=TaskConfig, description="What to do with each row.")
    engine: EngineConfig = Field(description="The model and where it runs.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Sampler settings.")
    workers: WorkersConfig = Field(default_factory=WorkersConfig, description="Ray actor pool settings.")
    job: JobSettings = Field(default_factory=JobSettings, description="Job-level settings.")

    def output_storage(self) -> StorageConfig:
        return self.output.storage if self.output.storage is not None else self.input.storage

    def sampling_params(self):
        """The engine's ``SamplingParams`` for this job (the one place config becomes engine dataclasses)."""
        from engine import SamplingParams

        return SamplingParams(**self.sampling.model_dump())

    def redacted(self) -> dict:
        """The config as plain data with secrets masked (for summary.json and logs)."""
        return json.loads(self.model_dump_json())  # SecretStr dumps as '**********'

    def fingerprint_fields(self) -> dict:
        """What must not change between a run and its resume: anything that changes an output row."""
        return {
            "input": self.input.model_dump(include={"path", "format", "id_column", "text_column"}),
            "output.rows_per_file": self.output.rows_per_file,
            "task": self.task.model_dump(),
            "engine": self.engine.model_dump(include={"backend", "checkpoint", "dtype"}),
            "sampling": self.sampling.model_dump(),
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


def _allowed_fields(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names allowed at ``loc`` (for 'did you mean' hints)."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ()) or (ann,)
        nested = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)


def _num(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _describe(error: dict, model: type[BaseModel]) -> str:
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p in ("function-after",)))
    where = ".".join(str(p) for p in loc) or "config"
    kind, ctx, value = error["type"], error.get("ctx", {}), error.get("input")
    got = f" (got {value!r})" if not isinstance(value, (dict, list)) else ""
    if kind == "extra_forbidden":
        allowed = _allowed_fields(model, loc)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else (f"; allowed: {', '.join(allowed)}" if allowed else "")
        return f"{where}: unknown field{hint}"
    if kind == "missing":
        return f"{where}: required field is missing"
    phrases = {
        "greater_than": lambda: f"must be > {_num(ctx.get('gt'))}",
        "greater_than_equal": lambda: f"must be >= {_num(ctx.get('ge'))}",
        "less_than": lambda: f"must be < {_num(ctx.get('lt'))}",
        "less_than_equal": lambda: f"must be <= {_num(ctx.get('le'))}",
        "literal_error": lambda: f"must be one of {ctx.get('expected')}",
        "int_type": lambda: "must be an integer", "int_parsing": lambda: "must be an integer",
        "int_from_float": lambda: "must be an integer",
        "float_type": lambda: "must be a number", "float_parsing": lambda: "must be a number",
        "bool_type": lambda: "must be true or false", "bool_parsing": lambda: "must be true or false",
        "string_type": lambda: "must be a string", "model_type": lambda: "must be a mapping of fields",
        "dict_type": lambda: "must be a mapping of fields",
        "string_too_short": lambda: "must not be empty",
    }
    if kind in phrases:
        return f"{where}: {phrases[kind]()}{got}"
    if kind == "value_error":
        msg = str(ctx.get("error", error["msg"]))
        return f"{where}: {msg}"
    return f"{where}: {error['msg']}{got}"


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
        key = f"{prefix}{name}"
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
