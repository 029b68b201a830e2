"""The callable class Ray Data's ``map_batches`` runs: one ``DiffusionEngine`` per actor, rows in, rows out.

One row's way through it: ``row_of`` (``workers/rows.py``) -> ``task.plan`` -> ``task.execute`` (the engine) ->
``task.render`` -> ``output_table``. The row contract (``workers/rows.py``): every input row is answered by
exactly one output row, in the same order, carrying its id and position. Bad rows (null, empty, non-string, too
long, a generation that raises) become ``status='error'`` rows with a message; only a broken engine (it cannot be
loaded) raises.
"""

from __future__ import annotations

import copy
import logging
import time

import pyarrow as pa

from engine.tasks import RowError
from engine.tasks.seeds import row_seed  # also imported from here by callers and tests
from workers.metrics import metric_tags, record_generation
from workers.rows import (ENGINE_SECONDS, INTERNAL_FIELDS, OUTPUT_SCHEMA, STAGED_SCHEMA,  # noqa: F401 - re-exported
                          WORKER_SCHEMA, output_table, rows_of, text_problem)

logger = logging.getLogger(__name__)


def load_engine(checkpoint: str, device: str = "auto", dtype: str = "auto", num_threads: int | None = None,
                quantization: str = "none"):
    """Load the redraft engine for one actor (``auto`` device and dtype are resolved by ``from_pretrained``);
    ``quantization``: ``none``, ``int8`` or ``fp8`` expert weights (``engine/quantize.py``)."""
    import torch

    from engine import DiffusionEngine
    from engine.engine import resolve_device

    if resolve_device(device).type == "cpu" and num_threads:
        torch.set_num_threads(num_threads)
    return DiffusionEngine.from_pretrained(checkpoint, device=device, dtype=dtype, quantization=quantization)


class RedraftBatchWorker:
    """Holds one engine; ``__call__`` answers a batch of rows.

    Args:
        checkpoint: local checkpoint directory.
        task: an ``engine.tasks.Task`` (plan / execute / render).
        params: the engine's ``SamplingParams``.
        device, dtype: as in the job config (``auto`` resolved here, on the actor).
        max_input_chars: rows with longer text become error rows (default: the task's own ``max_input_chars``).
        num_threads: torch threads on CPU (the actor's CPU share).
        quantization: the job's ``engine.quantization`` (``none``, ``int8``, ``fp8``).
        engine_loader: ``(checkpoint, device, dtype, num_threads, quantization) -> engine``; tests pass a fake.
        batch_invariant: the job's ``engine.batch_invariant``.
        job_name: tags this worker's Ray metrics (``redraft_*``), with the model name.
    """

    def __init__(self, checkpoint: str, task, params, device: str = "auto", dtype: str = "auto",
                 max_input_chars: int | None = None, num_threads: int | None = None, engine_loader=None,
                 job_name: str = "", quantization: str = "none", max_inflight: int | None = None,
                 batch_invariant: bool = False):
        loader = engine_loader or load_engine
        self.engine = loader(checkpoint, device, dtype, num_threads, quantization)
        if batch_invariant:  # rows independent of their batch mates (engine.batch_invariant)
            self.engine.batch_invariant = True
        if max_inflight is not None:
            self.engine.max_inflight = max_inflight  # the batch's rows queue behind this many canvases in flight
        if max_input_chars is not None and max_input_chars != task.max_input_chars:
            task = copy.copy(task)  # this worker's limit, without touching the caller's task
            task.max_input_chars = max_input_chars
        self.task = task
        self.params = params
        self.model = str(self.engine.model_name)
        self.sampling_hash = params.digest()
        self.metric_tags = metric_tags(job=job_name, model=self.model)

    def _execute(self, plans: list, seeds: list[int]) -> list:
        """One ``Result`` or ``RowError`` per plan. A failing batch is retried row by row, so only the rows that
        fail on their own become error rows."""
        try:
            results = self.task.execute(self.engine, plans, self.params, seeds)
            if len(results) != len(plans):
                raise RuntimeError(f"engine answered {len(results)} of {len(plans)} prompts")
            return list(results)
        except Exception as err:  # noqa: BLE001
            if len(plans) == 1:
                return [RowError(f"generation failed: {type(err).__name__}: {err}")]
            logger.warning("batch of %d failed (%s: %s); retrying row by row", len(plans), type(err).__name__, err)
        return [self._execute([p], [s])[0] for p, s in zip(plans, seeds)]

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.perf_counter()
        rows = rows_of(batch)
        plans = [self.task.plan(row) for row in rows]
        answers: list = list(plans)  # a RowError stays; a plan is replaced by its answer
        todo = [i for i, p in enumerate(plans) if not isinstance(p, RowError)]
        busy = [0.0] * len(rows)
        if todo:
            seeds = [row_seed(self.params.seed, rows[i].id) for i in todo]
            t = time.perf_counter()
            executed = self._execute([plans[i] for i in todo], seeds)
            generated = [i for i, a in zip(todo, executed) if not isinstance(a, RowError)]
            share = (time.perf_counter() - t) / max(len(generated), 1)
            for i, answer in zip(todo, executed):
                answers[i] = answer
            for i in generated:
                busy[i] = share
        outputs = [None if isinstance(a, RowError) else self.task.render(p, a) for p, a in zip(plans, answers)]
        ok = [a for a in answers if not isinstance(a, RowError)]
        record_generation(ok, self.metric_tags, errors=len(answers) - len(ok))
        out = output_table([r.id for r in rows], answers, outputs, self.model, self.sampling_hash,
                           batch.column("__shard"), batch.column("__row"))
        out = out.append_column(ENGINE_SECONDS, pa.array(busy, pa.float64()))
        logger.debug("answered %d rows in %.2fs", len(rows), time.perf_counter() - started)
        return out
