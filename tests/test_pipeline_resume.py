"""Exactly once under failure: a worker actor killed mid job (Ray restarts it and retries its batches), and a
driver killed mid job then run again (the rerun generates only the rows not yet done)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipelines.config import validate_config
from pipelines.output import OutputLayout
from pipelines.run import run_job
from pipelines.storage import Location
from tests.pipeline_fixtures import (job_config, prompts, ray_cluster, ray_worker_pids, read_output,  # noqa: F401
                                     write_jsonl)

REPO = Path(__file__).resolve().parents[1]
N_ROWS = 48


def slow_job(tiny_checkpoint, tmp_path):
    """Enough small batches that a kill lands mid job (fixed steps: every batch costs the same)."""
    src = write_jsonl(tmp_path / "in.jsonl", prompts(N_ROWS))
    return job_config(tiny_checkpoint, src, tmp_path / "out", output={"rows_per_file": 8},
                      sampling={"max_new_tokens": 16, "max_denoising_steps": 6, "fixed_steps": True},
                      workers={"batch_size": 2, "concurrency": 1})


def rows_done(out: Path) -> int:
    """Rows staged or in part files so far (what a rerun would not generate again)."""
    layout = OutputLayout(Location.of(str(out), None))
    keys = {p.name[: -len(".parquet")] for p in out.glob("part-*.parquet")}
    staged = 0
    for d in (out / "_redraft" / "staging").glob("part-*"):
        _, rows = layout.scan({d.name})
        staged += sum(len(v) for v in rows.values())
    return 8 * len(keys) + staged


def staged_files(out: Path) -> int:
    return len(list((out / "_redraft" / "staging").glob("*/*.parquet"))) + len(list(out.glob("part-*.parquet")))


def assert_exactly_once(out: Path):
    rows = read_output(out)
    ids = [r["id"] for r in rows]
    assert sorted(ids) == sorted(f"doc-{i}" for i in range(N_ROWS)) and len(set(ids)) == N_ROWS
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows if r["status"] != "ok"]
    assert not (out / "_redraft" / "staging").exists()
    return rows


@pytest.mark.slow
def test_killed_worker_actor_mid_job_is_replaced_without_duplicates(ray_cluster, tiny_checkpoint, tmp_path):
    cfg = validate_config(slow_job(tiny_checkpoint, tmp_path))
    out = tmp_path / "out"
    seen: dict = {"killed": None, "done_at_kill": None, "replacement": None}
    stop = threading.Event()

    def killer():
        while not stop.is_set():
            pids = ray_worker_pids()
            if seen["killed"] is None and pids and staged_files(out) >= 2:
                seen["done_at_kill"] = rows_done(out)
                seen["killed"] = pids[0]
                os.kill(pids[0], signal.SIGKILL)
            elif seen["killed"] is not None and any(p != seen["killed"] for p in pids):
                seen["replacement"] = next(p for p in pids if p != seen["killed"])
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        result = run_job(cfg)
    finally:
        stop.set()
        thread.join(5)
    assert seen["killed"] is not None, "the job finished before a worker could be killed"
    assert 0 < seen["done_at_kill"] < N_ROWS, seen
    assert seen["replacement"] is not None, "Ray did not start a replacement actor"
    assert result.exit_code == 0
    assert result.summary["rows_total"] == N_ROWS and result.summary["rows_ok"] == N_ROWS
    assert_exactly_once(out)


def _start_driver(cfg_dict: dict, tmp_path: Path, ray_cluster: str, **popen) -> tuple[subprocess.Popen, list, dict]:
    """``redraft run`` on ``cfg_dict`` as a subprocess; returns once 3 staging files exist or the driver ended."""
    cfg_path = tmp_path / "job.json"
    cfg_path.write_text(json.dumps(cfg_dict))
    env = {**os.environ, "RAY_ADDRESS": ray_cluster, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "pipelines.cli", "run", str(cfg_path)]
    driver = subprocess.Popen(cmd, cwd=REPO, env=env, **popen)
    deadline = time.time() + 120
    while staged_files(tmp_path / "out") < 3 and driver.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    return driver, cmd, env


@pytest.mark.slow
def test_killed_driver_then_rerun_finishes_the_rest_only(ray_cluster, tiny_checkpoint, tmp_path):
    cfg_dict = slow_job(tiny_checkpoint, tmp_path)
    out = tmp_path / "out"
    with open(tmp_path / "driver.log", "w") as log:
        driver, _, _ = _start_driver(cfg_dict, tmp_path, ray_cluster, stdout=log, stderr=subprocess.STDOUT)
        try:
            assert driver.poll() is None, "the driver ended before it could be killed:\n" + \
                (tmp_path / "driver.log").read_text()[-3000:]
            driver.send_signal(signal.SIGKILL)
            driver.wait(10)
        finally:
            if driver.poll() is None:
                driver.kill()
    # the dead driver's actors go with it; wait for them so the state below is final
    deadline = time.time() + 30
    while ray_worker_pids() and time.time() < deadline:
        time.sleep(0.2)
    done_at_kill, stable_since = rows_done(out), time.time()
    while time.time() - stable_since < 1.0 and time.time() < deadline:  # no late write from the dead job
        time.sleep(0.2)
        now = rows_done(out)
        if now != done_at_kill:
            done_at_kill, stable_since = now, time.time()
    assert 0 < done_at_kill < N_ROWS
    before = {r["id"]: r["output"] for r in _staged_and_parts(out)}

    result = run_job(validate_config(cfg_dict))
    summary = result.summary
    assert result.exit_code == 0
    assert summary["rows_resumed"] == done_at_kill
    assert summary["rows_generated_this_run"] == N_ROWS - done_at_kill  # finished rows were not generated again
    rows = assert_exactly_once(out)
    final = {r["id"]: r["output"] for r in rows}
    assert all(final[k] == v for k, v in before.items())


def _staged_and_parts(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    files = list(out.glob("part-*.parquet")) + list((out / "_redraft" / "staging").glob("*/*.parquet"))
    return [r for f in files for r in pq.read_table(f, columns=["id", "output"]).to_pylist()]


@pytest.mark.slow
def test_sigterm_to_the_driver_stops_like_ctrl_c_and_a_rerun_finishes_once(ray_cluster, tiny_checkpoint, tmp_path):
    cfg_dict = slow_job(tiny_checkpoint, tmp_path)
    out = tmp_path / "out"
    driver, cmd, env = _start_driver(cfg_dict, tmp_path, ray_cluster, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
    try:
        assert driver.poll() is None, "the driver ended before SIGTERM:\n" + driver.communicate()[1][-3000:]
        driver.send_signal(signal.SIGTERM)
        _, err = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 143, err[-3000:]
    assert "redraft: stopped by SIGTERM; rows finished so far are kept; run the same command again to resume" in err
    assert "*** SIGTERM received" not in err and "Traceback" not in err
    done = rows_done(out)
    assert 0 < done < N_ROWS
    rerun = subprocess.run(cmd + ["--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout)
    assert summary["rows_resumed"] + summary["rows_generated_this_run"] == N_ROWS
    assert summary["rows_resumed"] >= done
    assert_exactly_once(out)
