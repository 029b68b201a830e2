"""A real `redraft run` job's Ray metrics, scraped from the node's Prometheus endpoint, agree with its summary."""

from __future__ import annotations

import time

import pytest

from pipelines.config import validate_config
from pipelines.run import run_job
from tests.pipeline_fixtures import job_config, prompts, ray_cluster, write_jsonl  # noqa: F401
from tests.serve_fixtures import metric_samples, metrics_port, scrape

JOB = "metrics-job-summary"


def _total(text: str, family: str, **labels) -> float:
    return sum(v for lab, v in metric_samples(text, family) if all(lab.get(k) == w for k, w in labels.items()))


@pytest.mark.slow
def test_job_counters_agree_with_summary(ray_cluster, tmp_path, tiny_checkpoint):  # noqa: F811
    rows = prompts(9)
    rows[3]["text"] = ""  # an error row
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    cfg = job_config(tiny_checkpoint, src, tmp_path / "out", job={"name": JOB},
                     workers={"batch_size": 4, "concurrency": 1})
    result = run_job(validate_config(cfg))
    assert result.exit_code == 0, result.message
    summary = result.summary
    assert summary["rows_ok"] == 8 and summary["rows_error"] == 1

    port, deadline, text = metrics_port(), time.time() + 90, ""
    while time.time() < deadline:  # Ray exports every few seconds
        text = scrape(port)
        if _total(text, "ray_redraft_rows_total", job_name=JOB) >= summary["rows_total"]:
            break
        time.sleep(1)
    assert _total(text, "ray_redraft_rows_total", job_name=JOB, status="ok") == summary["rows_ok"]
    assert _total(text, "ray_redraft_rows_total", job_name=JOB, status="error") == summary["rows_error"]
    assert _total(text, "ray_redraft_output_tokens_total", job_name=JOB) == summary["output_tokens"]
    assert _total(text, "ray_redraft_tokens_per_pass_count", job_name=JOB) == summary["rows_ok"]
