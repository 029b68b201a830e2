"""Fixtures for the Serve tests: the session's shared local Ray (``tests.pipeline_fixtures.ray_cluster``), Serve's
HTTP proxy on a free loopback port, and the redraft app deployed on the tiny checkpoint.

Import into a test module with ``from tests.serve_fixtures import ray_cluster, serve_app``.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from tests.pipeline_fixtures import ray_cluster  # noqa: F401 - re-exported: one Ray per session

MODEL = "redraft-test"
API_KEY = "test-secret-token"
_state: dict = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_config(checkpoint, **sections) -> dict:
    """A small, fast Serve config as plain data; keyword sections are merged over the defaults."""
    cfg = {
        "model_name": MODEL,
        "engine": {"checkpoint": str(checkpoint), "device": "cpu", "dtype": "float32"},
        "sampling": {"max_new_tokens": 16, "max_denoising_steps": 4},
        "http": {"max_body_bytes": 4096, "max_tokens_limit": 64, "max_prompts_per_request": 16,
                 "max_request_tokens": 1024},
        "deployment": {"num_replicas": 1, "max_batch_size": 8, "batch_wait_timeout_s": 0.05, "num_cpus": 1},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def _start_serve() -> str:
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return f"http://127.0.0.1:{port}"


def wait_ready(url: str, headers: dict | None = None, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            req = urllib.request.Request(url + "/v1/models", headers=headers or {})
            with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback only
                json.load(resp)
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.time() > deadline:
                raise
            time.sleep(0.3)


def deploy(name: str, route_prefix: str, cfg: dict, api_key: str | None = None) -> str:
    """Deploy a redraft app named ``name`` under ``route_prefix``; returns its base URL."""
    from ray import serve

    from pipelines.serve_app import build_app
    from pipelines.serve_config import validate_serve_config

    if "serve" not in _state:
        _state["serve"] = _start_serve()
    serve.run(build_app(validate_serve_config(cfg), api_key), name=name, route_prefix=route_prefix)
    url = _state["serve"] + (route_prefix.rstrip("/"))
    wait_ready(url, {"Authorization": f"Bearer {api_key}"} if api_key else None)
    return url


@pytest.fixture(scope="session")
def serve_app(ray_cluster, tiny_checkpoint) -> str:  # noqa: F811 - the imported fixture
    """Base URL (``http://127.0.0.1:PORT``) of the redraft app on the tiny checkpoint (no API key)."""
    if "app" not in _state:
        _state["app"] = deploy("redraft", "/", serve_config(tiny_checkpoint))
    return _state["app"]


def metrics_port() -> int:
    """This node's Prometheus export port (Ray picks one when ``ray.init`` is not given one)."""
    import ray

    return int(ray.nodes()[0]["MetricsExportPort"])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:  # noqa: S310
        return resp.read().decode()


def metric_samples(text: str, family: str) -> list[tuple[dict, float]]:
    """``(labels, value)`` of every sample of ``family`` (e.g. ``ray_redraft_rows_total``) in Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    out = []
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name == family:
                out.append((dict(sample.labels), float(sample.value)))
    return out
