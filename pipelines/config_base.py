"""The config building blocks every section shares: ``ConfigError`` and the ``field: problem`` line each
pydantic error becomes (``_describe``), the no-bool-in-a-number base model, and the ``storage``, ``input`` and
``output`` sections (re-exported by ``pipelines.config``)."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class ConfigError(Exception):
    """The job config is invalid; ``str(err)`` holds one ``field: problem`` line per issue."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


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


BATCH_INVARIANT_SCOPE = ("redraft's batch-invariant tiles cover engine.backend 'redraft' with unquantized experts "
                         "(engine.quantization 'none'); set batch_invariant false or use that engine")


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
