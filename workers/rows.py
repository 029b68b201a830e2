"""The row contract, once for both backends (the diffusion worker and vLLM's stages).

Every input row is answered by exactly one output row, in the same order, carrying its id and position
(``__shard``, ``__row``). A row's answer is a ``Result`` or a ``RowError`` (``engine.tasks``); ``output_table``
turns answers into ``OUTPUT_SCHEMA`` rows (``status='error'`` with the message for a ``RowError``).

Input columns (``READ_SCHEMA``): ``__id``, ``__text``, ``__input_error``, ``__shard``, ``__row``, and ``__extra``
(``EXTRA_FIELD``: the task's extra input columns as a JSON object) for tasks that read more than the text;
``row_of`` reads one into an ``engine.tasks.Row``.
"""

from __future__ import annotations

import json

import pyarrow as pa

from engine.tasks import Row, RowError, text_problem  # noqa: F401 - text_problem is part of the contract

# What the readers (``pipelines/input_rows.py``) hand the workers: a row's id, text (null when the value is not a
# string: ``__input_error`` says why), position, and the task's extra columns as a JSON object when it reads any.
READ_SCHEMA = pa.schema([
    ("__id", pa.string()), ("__text", pa.string()), ("__input_error", pa.string()),
    ("__shard", pa.string()), ("__row", pa.int64()),
])
EXTRA_FIELD = pa.field("__extra", pa.string())
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
# The diffusion worker's answer also carries each row's share of the batch's engine time (the seconds inside the
# task's execute call, split evenly over the rows it generated; 0 for the others). The staging step sums it into
# its receipt for the job summary's engine-busy tokens/s and drops it (not staged, not output).
ENGINE_SECONDS = pa.field("__engine_seconds", pa.float64())
WORKER_SCHEMA = pa.schema(list(STAGED_SCHEMA) + [ENGINE_SECONDS])


def row_of(record: dict) -> Row:
    """The ``Row`` of one input record (a dict of ``READ_SCHEMA`` columns)."""
    extra = record.get("__extra")
    return Row(str(record["__id"]), record.get("__text"), json.loads(extra) if extra else {},
               record.get("__input_error") or None)


def rows_of(batch: pa.Table) -> list[Row]:
    """The ``Row`` of every record of an input batch, in order."""
    return [row_of(r) for r in batch.select([c for c in batch.column_names if c in _READ]).to_pylist()]


_READ = ("__id", "__text", "__input_error", "__extra")


def output_table(ids: list[str], answers: list, outputs: list[str | None], model: str, sampling_hash: str,
                 shards: pa.Array | list, positions: pa.Array | list) -> pa.Table:
    """``STAGED_SCHEMA`` rows: one per answer (a result with ``token_ids``, ``num_passes``, ``tokens_per_pass``,
    ``seconds``, or a ``RowError``); ``outputs``: each row's rendered output (``None`` for errors)."""
    ok = [not isinstance(a, RowError) for a in answers]
    cols = {
        "id": [str(i) for i in ids],
        "status": ["ok" if k else "error" for k in ok],
        "error": [None if k else a.message for a, k in zip(answers, ok)],
        "output": [o if k else None for o, k in zip(outputs, ok)],
        "num_output_tokens": [len(a.token_ids) if k else 0 for a, k in zip(answers, ok)],
        "num_passes": [int(a.num_passes) if k else 0 for a, k in zip(answers, ok)],
        "tokens_per_pass": [float(a.tokens_per_pass) if k else 0.0 for a, k in zip(answers, ok)],
        "num_self_corrections": [int(getattr(a, "num_self_corrections", 0)) if k else 0 for a, k in zip(answers, ok)],
        "seconds": [float(a.seconds) if k else 0.0 for a, k in zip(answers, ok)],
        "model": [model] * len(answers),
        "sampling_hash": [sampling_hash] * len(answers),
    }
    out = pa.table(cols, schema=OUTPUT_SCHEMA)
    out = out.append_column(INTERNAL_FIELDS[0], _column(shards, pa.string()))
    return out.append_column(INTERNAL_FIELDS[1], _column(positions, pa.int64()))


def _column(values, type_: pa.DataType):
    return values.cast(type_) if hasattr(values, "cast") else pa.array(list(values), type_)
