"""Node loss: a real multi-node ``ray.cluster_utils.Cluster`` (head + 3 worker nodes on 127.0.0.1) loses the worker
node that hosts an engine actor mid job; ``redraft run`` (connected through RAY_ADDRESS) goes on by itself, running
again from its staging when Ray gives up, and writes every row exactly once. Plus the fast checks of what the
driver retries and what it never does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.config import ConfigError, validate_config
from pipelines.recovery import lost_capacity
from pipelines.storage import StorageError
from tests.pipeline_fixtures import job_config, prompts, read_output, write_jsonl
from tests.test_pipeline_resume import rows_done, staged_files

REPO = Path(__file__).resolve().parents[1]
N_ROWS = 96


def test_ray_losses_are_retried_and_the_jobs_own_faults_are_not():
    import ray.exceptions as rex

    assert lost_capacity(rex.ActorUnavailableError("actor 9a0e is unavailable: RpcError", b"\x00" * 16))
    assert lost_capacity(rex.NodeDiedError("node 0119 died"))
    assert lost_capacity(rex.ObjectLostError("ab" * 14, "owner", "call site"))
    try:  # a remote error whose traceback text (not its type) names the lost actor
        raise RuntimeError("UDF failed") from ValueError("ray.exceptions.ActorUnavailableError: unreachable")
    except RuntimeError as err:
        assert lost_capacity(err)
    assert not lost_capacity(ValueError("text column 'text' is not valid UTF-8"))
    assert not lost_capacity(StorageError("cannot write s3://results/x: AWS Error NETWORK_CONNECTION"))
    assert not lost_capacity(KeyboardInterrupt())
    # an engine actor whose constructor raised (a broken checkpoint): Ray calls it a dead actor, it is the job's
    try:
        raise rex.ActorDiedError() from ValueError(
            "The actor died because of an error raised in its creation task ... engine.errors.CheckpointError: "
            "model.safetensors: tensor model.decoder.embed_tokens.weight holds 4 NaN/Inf values")
    except rex.ActorDiedError as err:
        assert not lost_capacity(err)


def test_max_attempts_is_validated(tiny_checkpoint, tmp_path):
    cfg = job_config(tiny_checkpoint, tmp_path / "in.jsonl", tmp_path / "out")
    assert validate_config(cfg).job.max_attempts == 3
    with pytest.raises(ConfigError, match="job.max_attempts"):
        validate_config({**cfg, "job": {"max_attempts": 0}})


def _actor_node(nodes) -> object | None:
    """The worker node whose raylet runs an engine actor process (its children's command lines name it)."""
    import psutil

    for node in nodes:
        for info in node.all_processes.get("raylet", []):
            try:
                children = psutil.Process(info.process.pid).children(recursive=True)
                if any("RedraftBatchWorker" in " ".join(c.cmdline()) for c in children):
                    return node
            except psutil.NoSuchProcess:
                continue
    return None


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    from ray._common.utils import get_ray_address_file

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Cluster records its address in /tmp/ray/ray_current_cluster, where any later ray.init() on this machine
    # would find it and connect; the driver is given RAY_ADDRESS instead, so put the file back as it was
    address_file = Path(get_ray_address_file(None))
    before = address_file.read_text() if address_file.exists() else None
    c = Cluster(initialize_head=True, shutdown_at_exit=False,
                head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False})
    if before is None:
        address_file.unlink(missing_ok=True)
    else:
        address_file.write_text(before)
    for _ in range(3):
        c.add_node(num_cpus=2, node_ip_address="127.0.0.1")
    yield c
    for node in list(c.worker_nodes):  # not Cluster.shutdown: it resets this process's own Ray state
        c.remove_node(node, allow_graceful=False)
    c.remove_node(c.head_node, allow_graceful=False)


@pytest.mark.slow
@pytest.mark.multinode  # its own pytest process: the Cluster's teardown ends the process's Ray driver
def test_worker_node_removed_mid_job_finishes_exactly_once(cluster, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    src = write_jsonl(tmp_path / "in.jsonl", prompts(N_ROWS))
    cfg = job_config(tiny_checkpoint, src, out, output={"rows_per_file": 8},
                     sampling={"max_new_tokens": 16, "max_denoising_steps": 6, "fixed_steps": True},
                     workers={"batch_size": 2, "concurrency": 2}, job={"name": "node-loss", "max_attempts": 3})
    (tmp_path / "job.json").write_text(json.dumps(cfg))
    env = {**os.environ, "RAY_ADDRESS": cluster.address, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pipelines.cli", "run", str(tmp_path / "job.json")]
    driver = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, victim = time.time() + 240, None
        while driver.poll() is None and time.time() < deadline:
            victim = _actor_node(cluster.worker_nodes) if staged_files(out) >= 2 else None
            if victim is not None:
                break
            time.sleep(0.05)
        assert victim is not None, "the job ended before a node could be removed:\n" + driver.communicate()[1][-3000:]
        done_at_kill = rows_done(out)
        cluster.remove_node(victim, allow_graceful=False)
        _, stderr = driver.communicate(timeout=420)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, stderr[-4000:]
    assert done_at_kill < N_ROWS
    summary = json.loads((out / "summary.json").read_text())  # stdout also carries Ray's own log lines
    rows = read_output(out)
    ids = [r["id"] for r in rows]
    assert sorted(ids) == sorted(f"doc-{i}" for i in range(N_ROWS)) and len(set(ids)) == N_ROWS  # none lost, no twice
    assert all(r["status"] == "ok" for r in rows)
    assert not (out / "_redraft" / "staging").exists()
    assert summary["rows_total"] == N_ROWS and summary["rows_generated_this_run"] <= N_ROWS
    assert 1 <= summary["attempts"] <= 3
    retried = [line for line in stderr.splitlines() if "attempt 2/3 after" in line]
    if summary["attempts"] > 1:  # the driver ran again from its staging: the rows staged before were not redone
        staged_then = int(retried[0].split("resuming from ")[1].split()[0])
        assert staged_then >= done_at_kill, retried
    print("RELIABILITY " + json.dumps({
        "fault": "worker node removed (allow_graceful=False) holding an engine actor", "nodes": "head + 3 workers",
        "rows_in": N_ROWS, "rows_out": len(ids), "duplicates": len(ids) - len(set(ids)),
        "lost": N_ROWS - len(set(ids)), "rows_done_at_kill": done_at_kill, "attempts": summary["attempts"],
        "resumed_from_staged_rows": int(retried[0].split("resuming from ")[1].split()[0]) if retried else None,
        "seconds": round(summary["wall_seconds"], 1)}))
