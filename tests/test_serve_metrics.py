"""Metrics: a few Serve requests and one real engine batch recorded from a Ray task (as the batch worker does),
scraped from the node's Prometheus endpoint; the counters must agree with what the answers reported. Then every
Grafana panel query must name a metric that this run exported."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.serve_fixtures import deploy, metric_samples, metrics_port, ray_cluster, scrape, serve_config  # noqa: F401
from workers.metrics import METRICS

DASHBOARD = Path(__file__).resolve().parents[1] / "workers" / "grafana" / "redraft_dashboard.json"
MODEL = "redraft-metrics"
JOB = "metrics-test-job"

pytestmark = pytest.mark.slow


def _total(text: str, family: str, **labels) -> float:
    return sum(v for lab, v in metric_samples(text, family) if all(lab.get(k) == w for k, w in labels.items()))


def _engine_batch_in_a_task(checkpoint: str) -> dict:
    """A real engine batch recorded the way the batch worker records one (one call per batch)."""
    import ray

    @ray.remote(num_cpus=1)
    def run(path):
        from engine import SamplingParams
        from workers.batch import load_engine
        from workers.metrics import metric_tags, record_generation

        engine = load_engine(path, "cpu", "float32", 1)
        params = SamplingParams(max_new_tokens=24, max_denoising_steps=4, seed=1)
        results = engine.generate(["def a():", "import sys", "class B:"], params)
        record_generation(results, metric_tags(job=JOB, model=MODEL), errors=1)
        time.sleep(0.5)
        return {"ok": len(results), "tokens": sum(len(r.token_ids) for r in results),
                "passes": sum(r.num_passes for r in results), "canvases": sum(r.num_canvases for r in results),
                "corrections": sum(r.num_self_corrections for r in results)}

    return ray.get(run.remote(checkpoint))


@pytest.fixture(scope="module")
def metrics_run(ray_cluster, tiny_checkpoint):  # noqa: F811
    """Serve answers, the job batch's summary and a scrape that already shows all of them."""
    from ray import serve

    url = deploy("redraft-metrics", "/metrics-test", serve_config(tiny_checkpoint, model_name=MODEL))
    bodies = [{"model": MODEL, "prompt": ["def f(x):", "x = 1"], "max_tokens": 20, "seed": 1},
              {"model": MODEL, "prompt": "import os", "max_tokens": 40, "seed": 2},
              {"model": MODEL, "prompt": "while x:", "max_tokens": 8, "seed": 3, "stream": False}]
    try:
        with ThreadPoolExecutor(len(bodies)) as pool:
            answers = list(pool.map(lambda b: requests.post(url + "/v1/completions", json=b, timeout=120), bodies))
        chat = requests.post(url + "/v1/chat/completions", timeout=120, json={
            "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 12, "seed": 4})
        answers.append(chat)
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        choices = [c for a in answers for c in a.json()["choices"]]
        served = {"rows": len(choices), "tokens": sum(a.json()["usage"]["completion_tokens"] for a in answers),
                  "passes": sum(c["redraft"]["num_passes"] for c in choices),
                  "canvases": sum(c["redraft"]["num_canvases"] for c in choices),
                  "corrections": sum(c["redraft"]["num_self_corrections"] for c in choices)}
        job = _engine_batch_in_a_task(str(tiny_checkpoint))
    finally:
        serve.delete("redraft-metrics")

    port, deadline, text = metrics_port(), time.time() + 90, ""
    serve_tags, job_tags = {"model": MODEL, "deployment": "RedraftServer"}, {"model": MODEL, "job_name": JOB}
    while time.time() < deadline:  # Ray exports every few seconds
        text = scrape(port)
        if (_total(text, "ray_redraft_rows_total", status="ok", **serve_tags) >= served["rows"]
                and _total(text, "ray_redraft_rows_total", status="error", **job_tags) >= 1
                and _total(text, "ray_redraft_serve_queue_depth", **serve_tags) == 0
                and metric_samples(text, "ray_redraft_serve_queue_depth")):
            break
        time.sleep(1)
    return {"text": text, "served": served, "job": job, "serve_tags": serve_tags, "job_tags": job_tags}


def test_serve_counters_agree_with_the_answers(metrics_run):
    text, served, tags = metrics_run["text"], metrics_run["served"], metrics_run["serve_tags"]
    assert _total(text, "ray_redraft_rows_total", status="ok", **tags) == served["rows"]
    assert _total(text, "ray_redraft_rows_total", status="error", **tags) == 0
    assert _total(text, "ray_redraft_output_tokens_total", **tags) == served["tokens"]
    assert _total(text, "ray_redraft_denoising_passes_total", **tags) == served["passes"]
    assert _total(text, "ray_redraft_canvases_total", **tags) == served["canvases"]
    assert _total(text, "ray_redraft_self_corrections_total", **tags) == served["corrections"]
    assert _total(text, "ray_redraft_tokens_per_pass_count", **tags) == served["rows"]
    assert _total(text, "ray_redraft_canvas_latency_seconds_count", **tags) == served["rows"]
    # engine calls: one per canvas step and settings group, so between max(canvases of a row) and all canvases.
    # (Ray exports histogram sums approximately, so only counts are compared.)
    assert 1 <= _total(text, "ray_redraft_engine_batch_size_count", **tags) <= served["canvases"]


def test_job_counters_agree_with_the_batch_summary(metrics_run):
    text, job, tags = metrics_run["text"], metrics_run["job"], metrics_run["job_tags"]
    assert _total(text, "ray_redraft_rows_total", status="ok", **tags) == job["ok"]
    assert _total(text, "ray_redraft_rows_total", status="error", **tags) == 1
    assert _total(text, "ray_redraft_output_tokens_total", **tags) == job["tokens"]
    assert _total(text, "ray_redraft_denoising_passes_total", **tags) == job["passes"]
    assert _total(text, "ray_redraft_canvases_total", **tags) == job["canvases"]
    assert _total(text, "ray_redraft_engine_batch_size_count", **tags) == 1
    assert _total(text, "ray_redraft_tokens_per_pass_count", **tags) == job["ok"]


def test_every_dashboard_query_names_an_exported_metric(metrics_run):
    exported = {name for fam in _families(metrics_run["text"]) for name in fam}
    dash = json.loads(DASHBOARD.read_text())
    used = set()
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\bray_redraft_[a-z_]+", target["expr"]))
            assert names, (panel["title"], target["expr"])
            missing = names - exported
            assert not missing, f"panel {panel['title']!r} queries {sorted(missing)}, not exported by the run"
            used |= names
    for var in dash["templating"]["list"]:
        for name in re.findall(r"\bray_redraft_[a-z_]+", json.dumps(var.get("query", ""))):
            assert name in exported
    # every metric has a panel
    for name in METRICS:
        assert any(u == f"ray_{name}" or u.startswith(f"ray_{name}_") for u in used), name


def _families(text: str) -> list[set[str]]:
    from prometheus_client.parser import text_string_to_metric_families

    return [{s.name for s in fam.samples} for fam in text_string_to_metric_families(text)]
