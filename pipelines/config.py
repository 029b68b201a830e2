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
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, SecretStr, ValidationError, create_model, field_validator,
                      model_validator)


class ConfigError(Exception):
    """The job config is invalid; ``str(err)`` holds one ``field: problem`` line per issue."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def _number_kind(annotation) -> str | None:
    """'an integer' / 'a number' when ``annotation`` takes numbers but not booleans, else None."""
    if annotation is Any:
        return None
    origin = typing.get_origin(annotation)
    args = set(typing.get_args(annotation)) if origin in (typing.Union, types.UnionType) else {annotation}
    if bool in args or Any in args:
        return None
    if int in args:
        return "an integer"
    return "a number" if float in args else None


def _bool_in_number(annotation, value) -> str | None:
    """The problem when ``value`` (or an item of it, for list/dict fields) is a boolean where a number goes."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if isinstance(value, bool):
            kind = _number_kind(annotation)
            return f"must be {kind}, not a boolean (got {str(value).lower()})" if kind else None
        containers = [a for a in typing.get_args(annotation) if typing.get_origin(a) in (list, dict)]
        return _bool_in_number(containers[0], value) if len(containers) == 1 else None
    if origin is list and isinstance(value, list):
        (item,) = typing.get_args(annotation) or (Any,)
        return next((p for p in (_bool_in_number(item, v) for v in value) if p), None)
    if origin is dict and isinstance(value, dict):
        item = (typing.get_args(annotation) or (Any, Any))[-1]
        return next((p for p in (_bool_in_number(item, v) for v in value.values()) if p), None)
    if isinstance(value, bool):
        kind = _number_kind(annotation)
        return f"must be {kind}, not a boolean (got {str(value).lower()})" if kind else None
    return None


class NoBoolNumbers(BaseModel):
    """Base of every redraft config model: YAML's ``true`` is not the number 1 (pydantic's lax mode would take it
    for an int or float field, so ``max_new_tokens: true`` would mean 1)."""

    @field_validator("*", mode="before")
    @classmethod
    def _reject_bool_numbers(cls, value, info):
        field = cls.model_fields.get(info.field_name) if info.field_name else None
        problem = _bool_in_number(field.annotation, value) if field is not None else None
        if problem:
            raise ValueError(problem)
        return value


class _Model(NoBoolNumbers):
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
    max_attempts: int = Field(
        default=10, ge=1, le=100, description="Tries of each S3 request (the AWS SDK's standard retry mode: "
        "exponential backoff with jitter) on 5xx answers, throttling, dropped connections and timeouts, before the "
        "job stops with a message naming the path.")
    connect_timeout_s: float = Field(default=5.0, gt=0, le=600, description="Seconds to open a connection to S3.")
    request_timeout_s: float = Field(
        default=10.0, gt=0, le=3600, description="Seconds an S3 request may send or receive nothing before it is "
        "given up and retried.")

    @model_validator(mode="after")
    def _keys_in_pairs(self):
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key must be given together (or both left out)")
        return self


class InputConfig(_Model):
    path: str = Field(description="Input: a file, a directory (its Parquet / JSON files, recursively; see format) "
                      "or a glob ('data/*.parquet'); local or 's3://bucket/prefix'.")
    format: Literal["auto", "parquet", "jsonl", "json"] = Field(
        default="auto", description="File format. 'auto' (default) goes by each file's name: .parquet/.pq "
        "Parquet; .jsonl/.ndjson JSON Lines; .json a JSON array of objects (read whole; a .json file of one object "
        "per line is read as JSON Lines); a .gz or .zst ending after a JSON one (.jsonl.gz, .ndjson.zst, .json.gz): "
        "that file, gzip/zstd-compressed. 'parquet', 'jsonl' or 'json' read a single file or a glob's files as "
        "that format (compression still from a .gz/.zst ending) and a folder's files of that kind. A folder's "
        "files that are not read are listed in the log and in summary.json's skipped_files. Content that does not "
        "match (Parquet bytes in a .jsonl) is one error naming the file.")
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


# which task kinds read each editing setting of TaskConfig
_TASK_FIELD_KINDS = {
    **dict.fromkeys(["infill_input", "prefix_column", "suffix_column", "hole_marker", "fill_tokens"], ("infill",)),
    **dict.fromkeys(["spans_column", "span_markers", "edit_token_ratio", "edit_extra_tokens", "insert_tokens"],
                    ("edit",)),
    "context_tokens": ("rewrite", "edit", "infill"), "window_tokens": ("rewrite", "edit"),
    **dict.fromkeys(["json_schema", "template", "string_tokens", "integer_tokens", "number_tokens"], ("structured",)),
}


class TaskConfig(_Model):
    model_config = ConfigDict(serialize_by_alias=True)  # dumps (summary, fingerprint) say 'schema', as the YAML does
    kind: Literal["generate", "rewrite", "infill", "edit", "structured"] = Field(
        default="generate", description="'generate': the text is a prompt and the output continues it. "
        "'rewrite': the instruction (with the text in place of {text}) goes through the checkpoint's chat "
        "template and the output replaces the document. 'infill': fill the hole between a prefix and a suffix. "
        "'edit': rewrite only the given spans of the document. 'structured': JSON that follows task.schema.")
    instruction: str | None = Field(
        default=None, validate_default=True, description="Rewrite instruction; '{text}' marks where the "
        "document goes. Required for 'rewrite'. Optional for 'edit' and 'infill': sent as a user turn through the "
        "chat template, and the edited document (or prefix, fill, suffix) follows as the model's reply. Optional "
        "for 'structured': the user turn before the text (default 'Extract the fields as JSON.'); a '{text}' in "
        "it marks where the text goes instead.")
    max_input_chars: int | None = Field(
        default=None, ge=1, description="Rows whose text is longer than this become error rows (infill from "
        "columns: prefix and suffix together). Default: 20000 for 'generate' and 'structured'; 1000000 for "
        "'rewrite', 'infill' and 'edit', which cut long documents into windows.")
    context_tokens: int = Field(
        default=1024, ge=0, description="Long documents ('rewrite', 'edit', 'infill'): tokens of the text "
        "before a window (already rewritten or edited) given to the model as context, at most.")
    window_tokens: int = Field(
        default=256, ge=8, description="Long documents: 'rewrite' cuts documents longer than this many tokens "
        "into windows of at most this size (at line ends where possible) and rewrites them one by one; 'edit' "
        "rewrites a span longer than this piece by piece. 256 is DiffusionGemma's canvas.")
    infill_input: Literal["columns", "marker"] = Field(
        default="columns", description="'infill': 'columns' reads task.prefix_column and task.suffix_column; "
        "'marker' reads the text column, which must hold task.hole_marker exactly once.")
    prefix_column: str = Field(default="prefix", min_length=1, description="'infill': column with the text "
                               "before the hole.")
    suffix_column: str = Field(default="suffix", min_length=1, description="'infill': column with the text "
                               "after the hole.")
    hole_marker: str = Field(default="<|fill|>", min_length=1, description="'infill' with infill_input "
                             "'marker': the string that marks the hole in the text.")
    fill_tokens: int = Field(default=64, ge=1, le=100_000, description="'infill': token budget of the fill; "
                             "positions the model leaves unused (end-of-sequence, padding) are dropped.")
    spans_column: str = Field(default="spans", min_length=1, description="'edit': column holding a list of "
                              "[start, end) character offsets (Python string indices) of the spans to rewrite.")
    span_markers: list[str] | None = Field(
        default=None, description="'edit': [open, close] marker strings, e.g. ['[[', ']]']: spans are marked "
        "in the text instead of a spans column; the markers are removed from the output.")
    edit_token_ratio: float = Field(default=1.5, gt=0, le=100, description="'edit': a span's token budget "
                                    "is its own token count times this, plus task.edit_extra_tokens.")
    edit_extra_tokens: int = Field(default=8, ge=0, description="'edit': tokens added to every span's budget.")
    insert_tokens: int = Field(default=16, ge=1, description="'edit': token budget of an empty span (an "
                               "insertion point).")
    # 'schema' in YAML; the attribute has another name because pydantic's BaseModel has a 'schema' method
    json_schema: dict | str | None = Field(
        default=None, alias="schema", description="'structured': the JSON Schema every output follows (the "
        "subset the README lists: objects, strings, integers, numbers, booleans, enums, arrays with maxItems): a "
        "mapping inline, or the path of a .json file, read when the config is loaded (relative paths from the "
        "current directory). Give this or task.template.")
    template: Any = Field(
        default=None, description="'structured': an example JSON document instead of a schema: objects keep "
        "their keys, leaf values give the types (string, integer, number, boolean), a list of N items gives an "
        "array of up to N items like its first.")
    string_tokens: int = Field(default=12, ge=1, le=256, description="'structured': canvas positions of a "
                               "string value (a string's maxLength, when lower, is used instead).")
    integer_tokens: int = Field(default=6, ge=1, le=32, description="'structured': canvas positions of an "
                                "integer value.")
    number_tokens: int = Field(default=8, ge=1, le=32, description="'structured': canvas positions of a "
                               "number value.")

    @field_validator("json_schema")
    @classmethod
    def _load_schema_file(cls, value):
        """A path is read here, so the job's fingerprint holds the schema itself (a changed file is a new job)."""
        if isinstance(value, str):
            from engine.tasks.schema_subset import load_schema_file

            return load_schema_file(value)
        return value

    @model_validator(mode="after")
    def _structured_schema(self):
        """'structured' needs a schema (or template) inside the supported subset; errors name its JSON path."""
        if self.kind != "structured":
            return self
        if (self.json_schema is None) == (self.template is None):
            raise ValueError(".schema: 'structured' needs task.schema or task.template (exactly one of them)")
        from engine.tasks import SchemaError

        from .convert import structured_task

        field = ".schema" if self.json_schema is not None else ".template"
        try:
            structured_task(self)
        except SchemaError as err:
            raise ValueError(err.at(field)) from None
        return self

    @field_validator("instruction")
    @classmethod
    def _instruction_fits_kind(cls, value, info):
        kind = info.data.get("kind")
        if kind == "rewrite":
            if not value or not value.strip():
                raise ValueError("required when task.kind is 'rewrite'")
            if value.count("{text}") != 1:
                raise ValueError("must contain '{text}' exactly once (where the document goes)")
        elif kind in ("edit", "infill", "structured"):
            if value is not None and not value.strip():
                raise ValueError("must not be empty (leave it out for no instruction)")
            if kind == "structured" and value is not None and value.count("{text}") > 1:
                raise ValueError("may contain '{text}' at most once (where the text goes; else it follows)")
        elif value is not None and kind is not None:
            raise ValueError(f"only used by task.kind 'rewrite', 'edit', 'infill' or 'structured' (task.kind is "
                             f"{kind!r}); remove it")
        return value

    @field_validator("context_tokens", "window_tokens", "infill_input", "prefix_column", "suffix_column",
                     "hole_marker", "fill_tokens", "spans_column", "span_markers", "edit_token_ratio",
                     "edit_extra_tokens", "insert_tokens", "json_schema", "template", "string_tokens",
                     "integer_tokens", "number_tokens")
    @classmethod
    def _used_by_kind(cls, value, info):
        """Editing settings given for a kind that ignores them are a likely mistake (runs on given values only)."""
        kind = info.data.get("kind")
        kinds = _TASK_FIELD_KINDS[info.field_name]
        if kind is not None and kind not in kinds:
            raise ValueError(f"only used by task.kind {' or '.join(map(repr, kinds))} (task.kind is {kind!r}); "
                             "remove it")
        if info.field_name == "span_markers" and value is not None and (
                len(value) != 2 or not all(value) or value[0] in value[1] or value[1] in value[0]):
            raise ValueError(f"must be [open, close]: two non-empty strings, neither inside the other (got {value!r})")
        return value

    def char_limit(self) -> int:
        """``max_input_chars``, or its default for this kind."""
        if self.max_input_chars is not None:
            return self.max_input_chars
        return 1_000_000 if self.kind in ("rewrite", "edit", "infill") else 20_000


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
    batch_invariant: bool = Field(default=False, description="A row's text depends only on its input, seed, sampling and checkpoint, never on the rows beside it in "
        "a batch, the batch size, max_inflight or where a resumed job regrouped rows (fixed-shape matrix tiles, "
        "always-masked attention; engine/layers/invariant.py). Costs 40-60% of tokens/s on CPU (README, "
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
        return engine

    def output_storage(self) -> StorageConfig:
        return self.output.storage if self.output.storage is not None else self.input.storage

    def sampling_params(self):
        """The engine's ``SamplingParams`` for this job (the one place config becomes engine dataclasses); for
        engine.backend 'vllm', a ``workers.vllm_worker.VLLMSampling``."""
        if self.engine.backend == "vllm":
            from workers.vllm_worker import vllm_sampling

            return vllm_sampling(self)
        from .convert import sampling_params

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
    return [field.alias or name for name, field in model.model_fields.items()]


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
        # a message starting with '.' continues the path (e.g. '.schema.properties.age: ...' under 'task')
        return f"{where}{msg}" if msg.startswith(".") else f"{where}: {msg}"
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
