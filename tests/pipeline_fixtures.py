"""Fixtures and helpers for the bulk-job tests: one local Ray per test session, one moto S3 server on loopback,
input writers and output readers.

Import the fixtures into a test module with ``from tests.pipeline_fixtures import ray_cluster, s3_server``.
pytest registers an imported fixture once per importing module, so the Ray cluster and the moto server are
process-wide singletons here (started on first use, stopped at exit), not per-module resources.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

RAY_CPUS = 8  # logical CPUs above the 2 physical ones, so actor pools cannot starve read/write tasks
S3_KEY, S3_SECRET = "testing", "testing-secret"

_state: dict = {}


def _start_ray() -> str:
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=RAY_CPUS, include_dashboard=False, logging_level="ERROR",
                 configure_logging=True, log_to_driver=False)
        atexit.register(ray.shutdown)
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    return ray.get_runtime_context().gcs_address


@pytest.fixture(scope="session")
def ray_cluster() -> str:
    """A local Ray shared by the whole session; returns its GCS address (for CLI subprocesses' RAY_ADDRESS)."""
    if "ray" not in _state:
        _state["ray"] = _start_ray()
    return _state["ray"]


def ray_worker_pids(name_part: str = "RedraftBatchWorker") -> list[int]:
    """PIDs of this session's Ray worker processes whose title contains ``name_part`` (children of our raylet
    only, never another Ray on the machine)."""
    import psutil
    import ray._private.worker as ray_worker

    node = ray_worker._global_node
    raylets = node.all_processes.get("raylet", []) if node is not None else []
    pids = []
    for info in raylets:
        try:
            children = psutil.Process(info.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for child in children:
            try:
                title = " ".join(child.cmdline())
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if name_part in title:
                pids.append(child.pid)
    return pids


# --------------------------------------------------------------------------------------------- moto S3

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_moto() -> str:
    port = _free_port()
    exe = Path(sys.executable).with_name("moto_server")
    cmd = [str(exe) if exe.exists() else "moto_server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()

    atexit.register(stop)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)  # noqa: S310 - loopback only
            return url
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {proc.returncode}")
            time.sleep(0.2)
    stop()
    raise RuntimeError("moto_server did not start within 30 s")


@pytest.fixture(scope="session")
def s3_server() -> str:
    """Endpoint URL of a real moto S3 server on 127.0.0.1 (one per session)."""
    if "moto" not in _state:
        _state["moto"] = _start_moto()
    return _state["moto"]


def s3_storage(endpoint: str) -> dict:
    """The ``storage`` config section for the moto server."""
    return {"endpoint_url": endpoint, "region": "us-east-1", "access_key_id": S3_KEY, "secret_access_key": S3_SECRET}


def s3_fs(endpoint: str, **kwargs):
    import pyarrow.fs as pafs

    host = endpoint.split("://", 1)[1]
    return pafs.S3FileSystem(endpoint_override=host, scheme="http", region="us-east-1", access_key=S3_KEY,
                             secret_key=S3_SECRET, **kwargs)


def make_bucket(endpoint: str, name: str) -> str:
    s3_fs(endpoint, allow_bucket_creation=True).create_dir(name)
    return name


# --------------------------------------------------------------------------------------------- data

def prompts(n: int, prefix: str = "doc") -> list[dict]:
    return [{"id": f"{prefix}-{i}", "text": f"Story number {i} starts with a"} for i in range(n)]


def write_jsonl(path: Path, rows: list, extra_lines: list[str] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return path


def write_parquet(path: Path, columns: dict, row_group_size: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def job_config(checkpoint, input_path, output_path, **sections) -> dict:
    """A small, fast job config as plain data; keyword sections are merged over the defaults."""
    cfg = {
        "input": {"path": str(input_path), "id_column": "id"},
        "output": {"path": str(output_path), "rows_per_file": 8},
        "engine": {"checkpoint": str(checkpoint), "device": "cpu", "dtype": "float32"},
        "sampling": {"max_new_tokens": 8, "max_denoising_steps": 4},
        "workers": {"batch_size": 4, "concurrency": 1},
        "job": {"name": "test", "max_error_fraction": 1.0},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def read_output(out_dir, fs=None) -> list[dict]:
    """Every output row of a finished job (local directory or, with ``fs``, an S3 prefix), in file order."""
    import pyarrow.fs as pafs

    fs = fs or pafs.LocalFileSystem()
    root = str(out_dir)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=False))
    from pipelines.output import PART_FILE

    names = sorted(i.path for i in infos if PART_FILE.fullmatch(i.base_name))
    rows = []
    for name in names:
        with fs.open_input_file(name) as f:
            rows.extend(pq.read_table(f).to_pylist())
    return rows


def output_files(out_dir) -> list[str]:
    from pipelines.output import PART_FILE

    return sorted(p.name for p in Path(out_dir).iterdir() if PART_FILE.fullmatch(p.name))


def raw_string_array(values: list[bytes | None]):
    """A pyarrow string array holding these bytes as they are, invalid UTF-8 included (what a writer that does not
    validate leaves in a Parquet file); pyarrow's own constructors refuse such values."""
    offsets, data, valid = [0], b"", []
    for v in values:
        data += v or b""
        offsets.append(len(data))
        valid.append(v is not None)
    mask = pa.array(valid, pa.bool_()).buffers()[1] if not all(valid) else None
    return pa.Array.from_buffers(pa.string(), len(values), [mask, pa.array(offsets, pa.int32()).buffers()[1],
                                                            pa.py_buffer(data)])


def corrupt_parquet_page(path: Path, row_group: int, column: int = 0) -> Path:
    """Overwrite the page header of one column chunk of a written Parquet file (the footer stays intact)."""
    md = pq.ParquetFile(path).metadata
    start = md.row_group(row_group).column(column).data_page_offset
    data = bytearray(path.read_bytes())
    data[start:start + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    return path
