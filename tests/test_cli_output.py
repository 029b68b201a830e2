"""What `redraft` prints while a job runs: row progress (terminal and plain), Ray's benign error line dropped,
and what -v adds."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import build_parser
from pipelines.console import BENIGN_RAY_LINES, RowProgress

from tests.pipeline_fixtures import job_config, prompts, ray_cluster, write_jsonl  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
RAY_LINE = ("[2026-12-03 07:03:27,384 E 17494 17494] core_worker.cc:2465: Actor with class name: "
            "'MapWorker(MapBatches(RedraftBatchWorker))' and ID: '40bc31bb6930d7d8b158033c01000000' has constructor "
            "arguments in the object store and max_restarts > 0. If the arguments in the object store go out of "
            "scope or are lost, the actor restart will fail.")


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_plain_progress_counts_rows_and_prints_at_the_interval_and_the_end():
    out = io.StringIO()
    p = RowProgress(10, "job t", stream=out, interval=3600)
    p.update(4, ok=4)  # first update: printed at once
    p.update(4, ok=3, error=1)  # inside the interval: not printed
    p.update(2, ok=2)  # the last rows: printed
    p.close()  # nothing new since: no duplicate
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("job t: 4/10 rows (40%), 4 ok, 0 error,") and "left" in lines[0]
    assert lines[1].startswith("job t: 10/10 rows (100%), 9 ok, 1 error,") and "left" not in lines[1]
    assert "\r" not in out.getvalue()


def test_plain_progress_with_no_interval_prints_every_update():
    out = io.StringIO()
    p = RowProgress(3, "x", stream=out, interval=0)
    for _ in range(3):
        p.update(1, ok=1)
    p.close()
    assert [line.split(":")[1].split(",")[0].strip() for line in out.getvalue().splitlines()] == [
        "1/3 rows (33%)", "2/3 rows (67%)", "3/3 rows (100%)"]


def test_terminal_progress_redraws_one_line_with_a_bar():
    out = _Tty()
    p = RowProgress(8, "job t", stream=out)
    assert p.tty
    p.update(8, ok=8)
    p.close()
    text = out.getvalue()
    assert text.startswith("\r\x1b[2K") and text.endswith("\n") and text.count("\n") == 1
    assert "[" + "#" * 24 + "]" in text and "8/8 rows (100%)" in text


def test_the_benign_ray_line_is_recognised_and_nothing_else():
    assert any(p.search(RAY_LINE) for p in BENIGN_RAY_LINES)
    for other in ("[2026-12-03 E 1 1] core_worker.cc:1: Actor died unexpectedly", "ValueError: max_restarts > 0",
                  "redraft: error: engine.checkpoint: directory not found"):
        assert not any(p.search(other) for p in BENIGN_RAY_LINES)


def test_stderr_filter_drops_benign_lines_written_to_fd_2_and_keeps_the_rest():
    code = f"""
import os, sys
from pipelines.console import configure, StderrFilter
configure(False)
os.write(2, {RAY_LINE!r}.encode() + b"\\n")
os.write(2, b"a real problem\\n")
print("from python", file=sys.stderr, flush=True)
os.write(2, b"no newline at the end\\n")
os.write(2, b"[a last partial line")
sys.exit(3)  # at once: what is pending must still come out
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 3, proc.stderr
    assert "core_worker" not in proc.stderr
    assert proc.stderr.splitlines() == ["a real problem", "from python", "no newline at the end",
                                        "[a last partial line"]


def test_verbose_is_accepted_before_and_after_the_subcommand():
    parser = build_parser()
    assert parser.parse_args(["-v", "run", "c.yaml"]).verbose is True
    assert parser.parse_args(["run", "-v", "c.yaml"]).verbose is True
    assert parser.parse_args(["run", "c.yaml"]).verbose is False
    assert parser.parse_args(["demo", "--verbose"]).verbose is True


def _run_cli(args, cfg_path, ray_cluster):
    env = {**os.environ, "RAY_ADDRESS": ray_cluster, "PYTHONPATH": str(REPO), "REDRAFT_PROGRESS_SECONDS": "0"}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args, "run", str(cfg_path), "--set",
                           "job.resume=false"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_job_prints_row_progress_without_ray_noise_and_more_with_v(ray_cluster, tiny_checkpoint, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", prompts(6))
    cfg = job_config(tiny_checkpoint, src, tmp_path / "out", workers={"batch_size": 2, "concurrency": 1})
    cfg_path = tmp_path / "job.json"
    cfg_path.write_text(json.dumps(cfg))

    quiet = _run_cli([], cfg_path, ray_cluster)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    err = quiet.stderr
    assert "job test: 6 rows in 1 input files -> 1 output files" in err
    progress = [line for line in err.splitlines() if line.startswith("job test: ") and " rows (" in line]
    assert progress[-1].startswith("job test: 6/6 rows (100%), 6 ok, 0 error"), err
    assert all(line.split(": ")[1].split("/")[0] in ("2", "4", "6") for line in progress), progress
    for noise in ("core_worker.cc", "logging_progress", "streaming_executor", " INFO "):
        assert noise not in err, f"{noise!r} printed without -v:\n{err}"
    assert "redraft job 'test': ok" in quiet.stdout

    loud = _run_cli(["-v"], cfg_path, ray_cluster)
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert "redraft INFO: staged 2 row(s) of part-" in loud.stderr
    assert "redraft INFO: output file part-" in loud.stderr
    assert "streaming_executor" in loud.stderr  # Ray Data's own lines are back
