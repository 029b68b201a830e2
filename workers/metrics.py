"""redraft's Ray metrics: one definition module for the batch workers and the Serve replicas.

Every metric is a ``ray.util.metrics`` object, so it is exported in Prometheus text on each node's metrics export
port with Ray's ``ray_`` prefix (``redraft_rows_total`` is scraped as ``ray_redraft_rows_total``) and shows on
the Ray dashboard's Grafana. Tags: ``job_name`` (bulk job name, '' in Serve), ``deployment`` (Serve deployment,
'' in jobs), ``model``; ``redraft_rows_total`` adds ``status`` (``ok`` / ``error``).

One call per engine batch records everything::

    from workers.metrics import record_generation, metric_tags
    tags = metric_tags(job="nightly", model=engine.model_name)
    record_generation(results, tags, errors=n_error_rows)   # results: the batch's GenerationResults

Outside a Ray worker or driver (``ray.is_initialized()`` false) every function is a no-op, so the engine and
the workers can be used and tested without Ray.
"""

from __future__ import annotations

import threading
from typing import Iterable

# "job_name", not "job": Prometheus's scrape config owns the "job" label and would rename ours to "exported_job".
TAG_KEYS = ("job_name", "deployment", "model")

# Bucket boundaries. Tokens per pass: a canvas of 16-64 tokens finished in 1..48 passes.
TOKENS_PER_PASS_BOUNDARIES = [0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64]
# Canvas latency: milliseconds (tiny models, big GPUs) to tens of seconds (long canvases on CPU).
LATENCY_BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60]
BATCH_SIZE_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]

# name -> (kind, description, extra tag keys, histogram boundaries). The dashboard JSON and its test use these.
METRICS: dict[str, tuple[str, str, tuple[str, ...], list | None]] = {
    "redraft_rows_total": ("counter", "Rows (prompts) answered, by status (ok / error).", ("status",), None),
    "redraft_output_tokens_total": ("counter", "Tokens generated.", (), None),
    "redraft_canvases_total": ("counter", "Canvases denoised and committed.", (), None),
    "redraft_denoising_passes_total": ("counter", "Decoder (denoising) passes, summed over rows.", (), None),
    "redraft_self_corrections_total": ("counter", "Positions accepted on one pass and renoised on the next.",
                                       (), None),
    "redraft_tokens_per_pass": ("histogram", "Tokens per denoising pass of each row.", (),
                                TOKENS_PER_PASS_BOUNDARIES),
    "redraft_canvas_latency_seconds": ("histogram", "Seconds per canvas of each row (row time / canvases).", (),
                                       LATENCY_BOUNDARIES),
    "redraft_engine_batch_size": ("histogram", "Rows per engine generate call.", (), BATCH_SIZE_BOUNDARIES),
    "redraft_serve_queue_depth": ("gauge", "Serve requests waiting for the engine on a replica.", (), None),
}

_lock = threading.Lock()
_objects: dict[str, object] = {}


def _enabled() -> bool:
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a dependency
        return False
    return ray.is_initialized()


def _metric(name: str):
    """The process's metric object for ``name`` (created on first use; Ray metrics are per process)."""
    obj = _objects.get(name)
    if obj is not None:
        return obj
    from ray.util import metrics

    kind, description, extra, boundaries = METRICS[name]
    with _lock:
        if name not in _objects:
            tag_keys = TAG_KEYS + extra
            if kind == "counter":
                _objects[name] = metrics.Counter(name, description=description, tag_keys=tag_keys)
            elif kind == "gauge":
                _objects[name] = metrics.Gauge(name, description=description, tag_keys=tag_keys)
            else:
                _objects[name] = metrics.Histogram(name, description=description, boundaries=boundaries,
                                                   tag_keys=tag_keys)
    return _objects[name]


def metric_tags(*, model: str, job: str = "", deployment: str = "") -> dict[str, str]:
    """The base tags of every redraft metric: a bulk job sets ``job`` (the ``job_name`` tag), a Serve deployment
    sets ``deployment``."""
    return {"job_name": str(job), "deployment": str(deployment), "model": str(model)}


def _full(tags: dict) -> dict[str, str]:
    return {key: str(tags.get(key, "")) for key in TAG_KEYS}


def record_generation(results: Iterable, tags: dict, errors: int = 0, engine_batch: bool = True) -> None:
    """Record one engine batch: ``results`` are the ``GenerationResult``s of its ok rows, ``errors`` the number
    of its rows that became error rows.

    Args:
        results: ``engine.GenerationResult`` objects (anything with ``token_ids``, ``num_canvases``,
            ``num_passes``, ``tokens_per_pass``, ``seconds``, ``num_self_corrections``).
        tags: from ``metric_tags`` (missing keys are recorded as '').
        errors: error rows of the batch.
        engine_batch: also observe ``redraft_engine_batch_size`` with ``len(results) + errors`` (pass False when
            the rows did not come from one engine call; see ``record_engine_batch``).
    """
    if not _enabled():
        return
    results = list(results)
    base = _full(tags)
    if results:
        _metric("redraft_rows_total").inc(len(results), tags={**base, "status": "ok"})
        tokens = sum(len(r.token_ids) for r in results)
        if tokens:
            _metric("redraft_output_tokens_total").inc(tokens, tags=base)
        canvases = sum(r.num_canvases for r in results)
        if canvases:
            _metric("redraft_canvases_total").inc(canvases, tags=base)
        passes = sum(r.num_passes for r in results)
        if passes:
            _metric("redraft_denoising_passes_total").inc(passes, tags=base)
        corrections = sum(getattr(r, "num_self_corrections", 0) for r in results)
        if corrections:  # Ray counters only take positive increments
            _metric("redraft_self_corrections_total").inc(corrections, tags=base)
        tpp, latency = _metric("redraft_tokens_per_pass"), _metric("redraft_canvas_latency_seconds")
        for r in results:
            tpp.observe(float(r.tokens_per_pass), tags=base)
            if r.num_canvases:
                latency.observe(float(r.seconds) / r.num_canvases, tags=base)
    if errors:
        _metric("redraft_rows_total").inc(errors, tags={**base, "status": "error"})
    if engine_batch and (results or errors):
        record_engine_batch(len(results) + errors, tags)


def record_errors(count: int, tags: dict) -> None:
    """Count ``count`` error rows (rows that never reached the engine, or whose generation failed)."""
    if count and _enabled():
        _metric("redraft_rows_total").inc(count, tags={**_full(tags), "status": "error"})


def record_engine_batch(size: int, tags: dict) -> None:
    """Observe the number of rows that shared one engine generate call."""
    if size and _enabled():
        _metric("redraft_engine_batch_size").observe(float(size), tags=_full(tags))


def set_queue_depth(depth: int, tags: dict) -> None:
    """Set the Serve queue depth gauge (requests waiting for the engine on this replica)."""
    if _enabled():
        _metric("redraft_serve_queue_depth").set(float(depth), tags=_full(tags))


def exported_names() -> list[str]:
    """Every Prometheus series family name Ray exports for these metrics (histograms as ``_bucket``/``_sum``/
    ``_count``), with Ray's ``ray_`` prefix."""
    names = []
    for name, (kind, *_rest) in METRICS.items():
        if kind == "histogram":
            names += [f"ray_{name}_bucket", f"ray_{name}_sum", f"ray_{name}_count"]
        else:
            names.append(f"ray_{name}")
    return names
