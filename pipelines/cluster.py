"""The Ray cluster a job runs on: connecting to it (or starting a local one), the engine actors' resources, and
SIGTERM handled like Ctrl-C so that a stopped job keeps its staged rows."""

from __future__ import annotations

import logging
import math
import os
import signal
import threading

from .config import JobConfig
from .recovery import JobError

logger = logging.getLogger("redraft")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler or Kubernetes stopping the job): handled like Ctrl-C, so staged rows are kept."""

    signum = signal.SIGTERM


def _on_sigterm(signum, frame):
    raise Terminated()


def handle_sigterm() -> None:
    """Make SIGTERM stop the job like Ctrl-C does (``Terminated``, a ``KeyboardInterrupt``). The CLI calls it;
    ``ray.init`` replaces the handler, so ``init_ray`` puts it back."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def init_ray(cfg: JobConfig) -> None:
    """Connect to RAY_ADDRESS's cluster, or start a local one with enough logical CPUs that the engine actors
    cannot starve the read and write tasks (Ray Data's actor pipelines deadlock when the actors hold every CPU)."""
    import ray

    if ray.is_initialized():
        return
    ours = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is _on_sigterm
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=logging.WARNING)
    else:
        c = cfg.workers.concurrency
        actors = max(c) if isinstance(c, list) else (c or 1)
        need = math.ceil(actors * cfg.workers.num_cpus) + 2
        # address='local': a new cluster even when another one's address is in /tmp/ray (ray start, a test)
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, need), logging_level=logging.WARNING)
    if ours:  # ray.init installed its own SIGTERM handler (it exits without redraft's resume message)
        handle_sigterm()


def actor_resources(cfg: JobConfig) -> dict:
    """num_gpus / num_cpus / concurrency for the engine actors (defaults per WorkersConfig)."""
    import ray

    w = cfg.workers
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    # a cluster named by RAY_ADDRESS may autoscale GPU nodes on demand; a local one never does
    may_grow = bool(os.environ.get("RAY_ADDRESS"))
    num_gpus = w.num_gpus
    if num_gpus is None:
        wants_gpu = cfg.engine.device == "cuda" or (cfg.engine.device == "auto" and cluster_gpus > 0)
        num_gpus = 1 if wants_gpu else 0
    if num_gpus > 0 and cfg.engine.device == "cpu":
        raise JobError("workers.num_gpus: GPUs requested for actors, but engine.device is 'cpu'")
    if cfg.engine.device == "cuda" and num_gpus == 0:
        raise JobError("workers.num_gpus: 0, but engine.device is 'cuda'")
    if num_gpus > cluster_gpus:
        problem = (f"{num_gpus:g} GPUs per actor, but the Ray cluster has {cluster_gpus:g} GPUs"
                   + (" (engine.device is 'cuda')" if w.num_gpus is None else ""))
        if not may_grow:
            raise JobError(f"{'workers.num_gpus' if w.num_gpus is not None else 'engine.device'}: {problem}")
        logger.warning("%s now; the job waits for the cluster to add GPU nodes", problem)
    concurrency = w.concurrency
    if concurrency is None:
        concurrency = max(1, math.floor(cluster_gpus / num_gpus)) if num_gpus else 1
    elif isinstance(concurrency, list):
        concurrency = tuple(concurrency)
    least = concurrency[0] if isinstance(concurrency, tuple) else concurrency
    cluster_cpus = ray.cluster_resources().get("CPU", 0)
    if least * w.num_cpus > cluster_cpus - 0.5:
        raise JobError(f"workers: {least} actors x {w.num_cpus:g} CPUs leave no CPU for reading and writing on "
                       f"this Ray cluster ({cluster_cpus:g} CPUs); lower workers.concurrency or workers.num_cpus")
    return {"num_gpus": num_gpus, "num_cpus": w.num_cpus, "concurrency": concurrency}
