"""The callable class Ray Data's ``map_batches`` runs: one ``DiffusionEngine`` per actor, rows in, rows out.

Row contract: every input row is answered by exactly one output row, in the same order, carrying its id and
position (``__shard``, ``__row``). Bad rows (null, empty, non-string, too long, a generation that raises) become
``status='error'`` rows with a message; only a broken engine (it cannot be loaded) raises.

Input columns (see ``pipelines.inputs.READ_SCHEMA``): ``__id``, ``__text``, ``__input_error``, ``__shard``,
``__row``, and ``__extra`` (the task's extra input columns as a JSON object) for tasks that read more than the
text. Output columns: ``OUTPUT_SCHEMA`` plus ``__shard`` and ``__row``.
"""

from __future__ import annotations

import json
import logging
import time

import pyarrow as pa

from engine.tasks.seeds import row_seed  # also imported from here by callers and tests
from workers.metrics import metric_tags, record_generation

logger = logging.getLogger(__name__)

OUTPUT_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),            # "ok" | "error"
    pa.field("error", pa.string()),                              # message, null when ok
    pa.field("output", pa.string()),                             # generated text, null on error
    pa.field("num_output_tokens", pa.int64(), nullable=False),   # 0 on error
    pa.field("num_passes", pa.int64(), nullable=False),          # denoising passes spent on the row
    pa.field("tokens_per_pass", pa.float64(), nullable=False),
    pa.field("num_self_corrections", pa.int64(), nullable=False),  # accepted on a pass, renoised on the next
    pa.field("seconds", pa.float64(), nullable=False),           # engine time until the row finished
    pa.field("model", pa.string(), nullable=False),
    pa.field("sampling_hash", pa.string(), nullable=False),      # SamplingParams.digest()
])
INTERNAL_FIELDS = [pa.field("__shard", pa.string()), pa.field("__row", pa.int64())]
STAGED_SCHEMA = pa.schema(list(OUTPUT_SCHEMA) + INTERNAL_FIELDS)
# The worker's answer also carries each row's share of the batch's engine time (the seconds inside the engine's
# generate call, split evenly over the rows it generated; 0 for rows that never reached the engine). The staging
# step sums it into its receipt for the job summary's engine-busy tokens/s and drops it (not staged, not output).
ENGINE_SECONDS = pa.field("__engine_seconds", pa.float64())
WORKER_SCHEMA = pa.schema(list(STAGED_SCHEMA) + [ENGINE_SECONDS])


def text_problem(text, max_input_chars: int) -> str | None:
    """Why a row's text cannot be used (the message of its error row), or None. Both backends use it, so a bad
    row reads the same whichever engine the job runs."""
    if text is None:
        return "text is null"
    if not isinstance(text, str):
        return f"text is a {type(text).__name__}, not a string"
    if not text.strip():
        return "text is empty"
    if len(text) > max_input_chars:
        return f"text has {len(text)} characters; task.max_input_chars is {max_input_chars}"
    return None


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
        task: a ``engine.tasks.Task`` (prepare_row / prompt_tokens / generate / output).
        params: the engine's ``SamplingParams``.
        device, dtype: as in the job config (``auto`` resolved here, on the actor).
        max_input_chars: rows with longer text become error rows.
        num_threads: torch threads on CPU (the actor's CPU share).
        quantization: the job's ``engine.quantization`` (``none``, ``int8``, ``fp8``).
        engine_loader: ``(checkpoint, device, dtype, num_threads, quantization) -> engine``; tests pass a fake.
        batch_invariant: the job's ``engine.batch_invariant``.
        job_name: tags this worker's Ray metrics (``redraft_*``), with the model name.
    """

    def __init__(self, checkpoint: str, task, params, device: str = "auto", dtype: str = "auto",
                 max_input_chars: int = 20_000, num_threads: int | None = None, engine_loader=None,
                 job_name: str = "", quantization: str = "none", max_inflight: int | None = None,
                 batch_invariant: bool = False):
        loader = engine_loader or load_engine
        self.engine = loader(checkpoint, device, dtype, num_threads, quantization)
        if batch_invariant:  # rows independent of their batch mates (engine.batch_invariant)
            self.engine.batch_invariant = True
        if max_inflight is not None:
            self.engine.max_inflight = max_inflight  # the batch's rows queue behind this many canvases in flight
        self.task = task
        self.params = params
        self.max_input_chars = max_input_chars
        self.model = str(self.engine.model_name)
        self.sampling_hash = params.digest()
        self.metric_tags = metric_tags(job=job_name, model=self.model)

    # ------------------------------------------------------------------------------------------- rows
    def _check(self, text, columns: dict, input_error) -> tuple[object, str | None]:
        """``(prompt, None)`` for a usable row, ``(None, message)`` for a bad one. ``columns``: the row's values of
        the task's extra input columns (infill's prefix and suffix, edit's spans)."""
        if input_error:
            return None, input_error
        if self.task.reads_text:
            problem = text_problem(text, self.max_input_chars)
            if problem is not None:
                return None, problem
        try:
            prompt = self.task.prepare_row(text, columns)
        except ValueError as err:
            return None, str(err)
        try:
            n = self.task.prompt_tokens(self.engine, prompt)
        except ValueError as err:  # the task rejects the row once it sees its tokens (a span that cannot fit)
            return None, str(err)
        except Exception as err:  # noqa: BLE001 - a tokenizer failure is this row's problem
            return None, f"cannot tokenize the prompt: {type(err).__name__}: {err}"
        limit = self.engine.max_prompt_tokens
        if n > limit:
            return None, f"prompt has {n} tokens; the model takes at most {limit}"
        return prompt, None

    def _generate(self, prompts: list[str], seeds: list[int]) -> list:
        """One ``GenerationResult`` or error message per prompt. A failing batch is retried row by row, so only
        the rows that fail on their own become error rows."""
        try:
            results = self.task.generate(self.engine, prompts, self.params, seeds)
            if len(results) != len(prompts):
                raise RuntimeError(f"engine answered {len(results)} of {len(prompts)} prompts")
            return list(results)
        except Exception as err:  # noqa: BLE001
            if len(prompts) == 1:
                return [f"generation failed: {type(err).__name__}: {err}"]
            logger.warning("batch of %d failed (%s: %s); retrying row by row", len(prompts), type(err).__name__, err)
        return [self._generate([p], [s])[0] for p, s in zip(prompts, seeds)]

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.perf_counter()
        ids = batch.column("__id").to_pylist()
        texts = batch.column("__text").to_pylist()
        input_errors = batch.column("__input_error").to_pylist()
        extras = batch.column("__extra").to_pylist() if "__extra" in batch.column_names else [None] * len(ids)
        answers: list = [None] * len(ids)  # GenerationResult or error message
        todo, prompts = [], []
        for i, (text, extra, input_error) in enumerate(zip(texts, extras, input_errors)):
            prompt, error = self._check(text, json.loads(extra) if extra else {}, input_error)
            if error is not None:
                answers[i] = error
            else:
                todo.append(i)
                prompts.append(prompt)
        busy = [0.0] * len(ids)
        if todo:
            seeds = [row_seed(self.params.seed, ids[i]) for i in todo]
            t = time.perf_counter()
            generated = self._generate(prompts, seeds)
            share = (time.perf_counter() - t) / len(todo)
            for i, answer in zip(todo, generated):
                answers[i], busy[i] = answer, share
        ok = [a for a in answers if not isinstance(a, str)]
        record_generation(ok, self.metric_tags, errors=len(answers) - len(ok))
        out = self._assemble(ids, answers)
        out = out.append_column(INTERNAL_FIELDS[0], batch.column("__shard").cast(pa.string()))
        out = out.append_column(INTERNAL_FIELDS[1], batch.column("__row").cast(pa.int64()))
        out = out.append_column(ENGINE_SECONDS, pa.array(busy, pa.float64()))
        logger.debug("answered %d rows in %.2fs", len(ids), time.perf_counter() - started)
        return out

    def _assemble(self, ids: list[str], answers: list) -> pa.Table:
        cols: dict[str, list] = {f.name: [] for f in OUTPUT_SCHEMA}
        for rid, ans in zip(ids, answers):
            ok = not isinstance(ans, str)
            cols["id"].append(rid)
            cols["status"].append("ok" if ok else "error")
            cols["error"].append(None if ok else ans)
            cols["output"].append(self.task.output(ans) if ok else None)
            cols["num_output_tokens"].append(len(ans.token_ids) if ok else 0)
            cols["num_passes"].append(int(ans.num_passes) if ok else 0)
            cols["tokens_per_pass"].append(float(ans.tokens_per_pass) if ok else 0.0)
            cols["num_self_corrections"].append(int(getattr(ans, "num_self_corrections", 0)) if ok else 0)
            cols["seconds"].append(float(ans.seconds) if ok else 0.0)
            cols["model"].append(self.model)
            cols["sampling_hash"].append(self.sampling_hash)
        return pa.table(cols, schema=OUTPUT_SCHEMA)
