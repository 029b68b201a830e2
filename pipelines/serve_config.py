"""The Serve config (``configs/serve.yaml``): YAML in, ``--set`` overrides, validated by pydantic.

``load_serve_config`` raises ``ServeConfigError`` with one ``field: problem`` line per issue. The sampling
section is the bulk job's (``pipelines.config.SamplingConfig``): the server's defaults, which each request may
narrow (``max_tokens``, ``temperature``, ``seed``).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from pathlib import Path
from typing import Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, model_validator

from .config import BATCH_INVARIANT_SCOPE, NoBoolNumbers, SamplingConfig, apply_overrides

DEMO_CHECKPOINT_HINT = "create it with: redraft demo-checkpoint {path}"


class ServeConfigError(Exception):
    """The Serve config is invalid or unsafe; ``str(err)`` holds one ``field: problem`` line per issue."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class _Model(NoBoolNumbers):
    model_config = ConfigDict(extra="forbid")


class ServeEngineConfig(_Model):
    checkpoint: str = Field(description="Local DiffusionGemma checkpoint directory (Hugging Face layout); "
                            "relative paths are relative to the directory 'redraft serve' runs from.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="'auto': CUDA when the replica "
                                                   "was given a GPU, else CPU.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="'auto': bfloat16 on CUDA, float32 on CPU.")
    quantization: Literal["none", "int8", "fp8"] = Field(
        default="none", description="Routed-expert weights at one byte each: 'int8' (saves memory) or 'fp8' (FP8 "
        "tensor cores on Hopper GPUs); as engine.quantization of a job.")
    batch_invariant: bool = Field(default=False, description="Each request's text independent of the requests "
                                  "batched with it and of their arrival order (as engine.batch_invariant of a job; "
                                  "runs at 0.33-0.53x the tokens/s on CPU).")

    @model_validator(mode="after")
    def _invariant_scope(self):
        if self.batch_invariant and self.quantization != "none":
            raise ValueError(f"batch_invariant: {BATCH_INVARIANT_SCOPE}")
        return self


class HttpConfig(_Model):
    host: str = Field(default="127.0.0.1", description="Address Serve's HTTP proxy binds. A non-loopback address "
                      "needs an API key (api_key_env) or allow_public_bind: true.")
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port.")
    allow_public_bind: bool = Field(default=False, description="Allow a non-loopback host without an API key "
                                    "(only behind another authenticating proxy).")
    api_key_env: str = Field(default="REDRAFT_API_KEY", min_length=1, description="Environment variable holding "
                             "the bearer token clients must send; unset or empty: no token is required.")
    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="Largest request body accepted (413 "
                                "above it).")
    max_tokens_limit: int = Field(default=1024, ge=1, description="Largest max_tokens a request may ask for "
                                  "(400 above it).")
    max_prompts_per_request: int = Field(default=64, ge=1, description="Most prompts in one completion request "
                                         "(400 naming 'prompt' above it, before any is tokenized), so one request "
                                         "cannot hold a replica for minutes.")
    max_request_tokens: int = Field(default=65_536, ge=1, description="Most tokens one request may ask for: "
                                    "prompt tokens plus max_tokens, summed over its prompts (an edit: the "
                                    "document's tokens plus max_tokens per span); 400 naming the field above it.")


class AutoscalingConfig(_Model):
    min_replicas: int = Field(default=1, ge=0, description="Fewest replicas (0 lets Serve scale to zero).")
    max_replicas: int = Field(default=1, ge=1, description="Most replicas.")
    target_ongoing_requests: float = Field(default=2.0, gt=0, description="Ongoing requests per replica Serve "
                                           "aims for when scaling.")

    @model_validator(mode="after")
    def _order(self):
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas})")
        return self


class DeploymentConfig(_Model):
    num_replicas: int | None = Field(default=None, ge=1, description="Fixed replica count (default 1); leave "
                                     "out when autoscaling is set.")
    autoscaling: AutoscalingConfig | None = Field(default=None, description="Autoscale between min and max "
                                                  "replicas instead of a fixed count.")
    max_batch_size: int = Field(default=8, ge=1, le=1024, description="Requests batched into one engine run.")
    batch_wait_timeout_s: float = Field(default=0.02, ge=0, le=10, description="How long the first request of "
                                        "a batch waits for others.")
    max_ongoing_requests: int = Field(default=64, ge=1, description="Requests a replica accepts at once "
                                      "(the rest queue in Serve's proxy).")
    num_gpus: float = Field(default=0, ge=0, description="GPUs per replica.")
    num_cpus: float = Field(default=1, gt=0, description="CPUs per replica (its torch threads on CPU).")

    @model_validator(mode="after")
    def _one_scaling_mode(self):
        if self.autoscaling is not None and self.num_replicas is not None:
            raise ValueError("set num_replicas or autoscaling, not both")
        if self.autoscaling is None and self.num_replicas is None:
            self.num_replicas = 1
        return self


class ServeConfig(_Model):
    model_name: str = Field(default="redraft-demo", min_length=1, description="The name clients pass as "
                            "'model' (listed by GET /v1/models).")
    engine: ServeEngineConfig = Field(description="The checkpoint and where it runs.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Default sampler settings "
                                     "(max_new_tokens is the default max_tokens).")
    http: HttpConfig = Field(default_factory=HttpConfig, description="HTTP binding and request limits.")
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig, description="Replicas, batching and "
                                         "resources.")

    def check_checkpoint(self) -> None:
        path = Path(self.engine.checkpoint)
        if not (path / "config.json").is_file():
            raise ServeConfigError([f"engine.checkpoint: no checkpoint at {path} (looked for "
                                    f"{path / 'config.json'}); " + DEMO_CHECKPOINT_HINT.format(path=path)])
        if not (path / "tokenizer.json").is_file():
            raise ServeConfigError([f"engine.checkpoint: {path} has no tokenizer.json; Serve takes and answers text, "
                                    "so it needs the checkpoint's tokenizer (copy tokenizer.json into the directory)"])

    def check_bind(self, api_key_set: bool) -> None:
        """Refuse a non-loopback host without a bearer token unless ``http.allow_public_bind`` is set."""
        if is_loopback(self.http.host) or api_key_set or self.http.allow_public_bind:
            return
        raise ServeConfigError([
            f"http.host: {self.http.host!r} is reachable from other machines and no API key is set; set "
            f"${self.http.api_key_env} to a secret token, bind 127.0.0.1, or set http.allow_public_bind: true"])


    def check_port(self) -> None:
        """Refuse an ``http.host:http.port`` this machine cannot bind (another process listens there), before
        Serve starts: its proxy would fail only after the URL was announced, with a traceback."""
        host, port = self.http.host, self.http.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # as uvicorn binds: a port left in TIME_WAIT by an earlier server is free, a listening one is not
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as err:
                if err.errno == errno.EADDRINUSE:
                    raise ServeConfigError([f"http.port: {host}:{port} is already in use by another process; stop "
                                            f"it or choose another port, e.g. --set http.port={port % 65535 + 1}"])
                raise ServeConfigError([f"http.host: cannot bind {host}:{port} ({err.strerror or err})"]) from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def validate_serve_config(data) -> ServeConfig:
    if not isinstance(data, dict):
        raise ServeConfigError([f"config: expected a mapping of sections, got {type(data).__name__}"])
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"]) or "config"
            msg = "unknown field" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {msg}")
        raise ServeConfigError(list(dict.fromkeys(lines))) from None


def load_serve_config(path: str | Path, overrides: list[str] | None = None) -> ServeConfig:
    """Read a Serve YAML config, apply ``key.path=value`` overrides, validate. Raises ``ServeConfigError``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ServeConfigError([f"{path}: config file not found"]) from None
    except yaml.YAMLError as err:
        raise ServeConfigError([f"{path}: not valid YAML: {err}"]) from None
    if not isinstance(data, dict):
        raise ServeConfigError([f"{path}: expected a mapping of sections (model_name, engine, http, ...)"])
    try:
        data = apply_overrides(data, list(overrides or []))
    except Exception as err:  # pipelines.config.ConfigError: a malformed --set
        raise ServeConfigError([str(err)]) from None
    return validate_serve_config(data)
