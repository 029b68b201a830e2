"""The Ray-facing worker, called directly: row contract, per-row errors, retries, seeds (no Ray here).

A fake engine checks the error handling; the tiny real checkpoint checks the engine contract end to end."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pytest

from engine import InputError, SamplingParams
from pipelines.config import TaskConfig
from pipelines.inputs import READ_SCHEMA
from engine.tasks import TASKS, Task
from pipelines.convert import build_task
from workers.batch import OUTPUT_SCHEMA, WORKER_SCHEMA, RedraftBatchWorker, row_seed

PARAMS = SamplingParams(max_new_tokens=8, max_denoising_steps=4, seed=3)


@dataclass
class FakeResult:
    text: str
    token_ids: list
    num_canvases: int = 1
    num_passes: int = 4
    tokens_per_pass: float = 0.5
    seconds: float = 0.01
    finish_reason: str = "length"


class FakeTokenizer:
    def encode(self, text):
        return list(range(len(text.split())))


class FakeEngine:
    """Answers 'out:<prompt>'; a prompt containing BOOM makes the whole call raise."""

    model_name = "fake-model"
    max_prompt_tokens = 6

    def __init__(self):
        self.tokenizer = FakeTokenizer()
        self.calls = []

    def apply_chat_template(self, messages):
        return f"<user> {messages[0]['content']} <model>"

    def generate(self, prompts, params, *, chat=False, seeds=None):
        self.calls.append((list(prompts), list(seeds), chat))
        if any("BOOM" in p for p in prompts):
            raise RuntimeError("kaboom")
        return [FakeResult(f"out:{p}", [1, 2]) for p in prompts]


def batch(texts, errors=None, ids=None):
    n = len(texts)
    return pa.table({
        "__id": ids or [f"r{i}" for i in range(n)], "__text": texts,
        "__input_error": errors or [None] * n, "__shard": ["part-00000-000000000"] * n, "__row": list(range(n)),
    }, schema=READ_SCHEMA)


def worker(task=None, max_input_chars=40, engine=None):
    engine = engine or FakeEngine()
    w = RedraftBatchWorker("unused", task or build_task(TaskConfig()), PARAMS, max_input_chars=max_input_chars,
                           engine_loader=lambda *args: engine)
    return w, engine


def test_every_row_answered_once_in_order_with_clear_errors():
    w, engine = worker()
    texts = ["hello there", None, "", "   ", "x" * 41, "BOOM now", "one two three four five six seven", "fine",
             "bad input"]
    errors = [None] * 8 + ["line is not valid JSON (oops)"]
    out = w(batch(texts, errors))
    assert out.schema == WORKER_SCHEMA
    rows = out.to_pylist()
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(9)] and [r["__row"] for r in rows] == list(range(9))
    status = {r["id"]: (r["status"], r["error"]) for r in rows}
    assert status["r0"] == ("ok", None) and status["r7"] == ("ok", None)
    assert status["r1"] == ("error", "text is null")
    assert status["r2"] == status["r3"] == ("error", "text is empty")
    assert status["r4"] == ("error", "text has 41 characters; task.max_input_chars is 40")
    assert status["r5"] == ("error", "generation failed: RuntimeError: kaboom")
    assert status["r6"] == ("error", "prompt has 7 tokens; the model takes at most 6")
    assert status["r8"] == ("error", "line is not valid JSON (oops)")
    ok = rows[0]
    assert (ok["output"], ok["num_output_tokens"], ok["num_passes"], ok["tokens_per_pass"]) == ("out:hello there", 2,
                                                                                               4, 0.5)
    assert ok["model"] == "fake-model" and ok["sampling_hash"] == PARAMS.digest()
    bad = rows[1]
    assert bad["output"] is None and bad["num_output_tokens"] == 0
    # the batch with the failing row was retried row by row, so only that row failed
    assert engine.calls[0][0] == ["hello there", "BOOM now", "fine"]
    assert [c[0] for c in engine.calls[1:]] == [["hello there"], ["BOOM now"], ["fine"]]


def test_seeds_come_from_the_job_seed_and_the_row_id():
    w, engine = worker()
    w(batch(["a b", "c d"], ids=["x", "y"]))
    assert engine.calls[0][1] == [row_seed(3, "x"), row_seed(3, "y")]
    assert row_seed(3, "x") != row_seed(4, "x") and 0 <= row_seed(3, "x") < 2**63


def test_rewrite_task_uses_the_chat_template_and_trims():
    task = build_task(TaskConfig(kind="rewrite", instruction="Fix: {text}"))
    w, engine = worker(task)
    out = w(batch(["a {b}"])).to_pylist()
    assert engine.calls[0][0] == ["Fix: a {b}"] and engine.calls[0][2] is True
    assert out[0]["output"] == "out:Fix: a {b}"
    # the chat template's tokens count against the prompt limit
    assert w(batch(["one two three four"])).to_pylist()[0]["error"] == "prompt has 7 tokens; the model takes at most 6"


def test_tasks_are_pluggable():
    assert set(TASKS) >= {"generate", "rewrite"}

    class Shout(Task):
        kind = "shout"

        def prepare(self, text):
            if "quiet" in text:
                raise ValueError("this row is too quiet")
            return text.upper()

    w, engine = worker(Shout())
    out = w(batch(["hey you", "quiet please"])).to_pylist()
    assert out[0]["output"] == "out:HEY YOU" and out[1]["error"] == "this row is too quiet"


def test_empty_batch():
    w, engine = worker()
    assert w(batch([])).num_rows == 0 and not engine.calls


@pytest.fixture(scope="module")
def real_worker(tiny_engine):
    return worker(build_task(TaskConfig()), max_input_chars=100_000, engine=tiny_engine)[0]


def test_real_engine_rows_and_batch_independence(real_worker, tiny_engine):
    texts = ["def main():", "The weather today", "import os"]
    together = real_worker(batch(texts)).to_pylist()
    assert [r["status"] for r in together] == ["ok"] * 3
    for r in together:
        assert isinstance(r["output"], str) and 1 <= r["num_output_tokens"] <= 8
        assert r["num_passes"] >= 1 and r["tokens_per_pass"] == pytest.approx(r["num_output_tokens"] / r["num_passes"])
        assert r["model"] == tiny_engine.model_name
    alone = real_worker(batch(texts[1:2], ids=["r1"])).to_pylist()[0]
    assert alone["output"] == together[1]["output"]  # a row's output does not depend on its batch


def test_max_inflight_queues_rows_without_changing_them(real_worker, tiny_checkpoint):
    """``workers.max_inflight`` below the batch size: rows queue behind a full decoder batch (continuous
    batching) and every output stays the same."""
    texts = ["def main():", "The weather today", "import os", "x = 1", "class A:"]
    reference = real_worker(batch(texts)).to_pylist()
    from workers.batch import load_engine

    queued = RedraftBatchWorker(str(tiny_checkpoint), build_task(TaskConfig()), PARAMS, max_input_chars=100,
                                engine_loader=lambda *a: load_engine(str(tiny_checkpoint), "cpu", "float32"),
                                max_inflight=2)
    assert queued.engine.max_inflight == 2
    out = queued(batch(texts)).to_pylist()
    assert [(r["output"], r["num_passes"]) for r in out] == [(r["output"], r["num_passes"]) for r in reference]


def test_real_engine_over_long_prompt_is_an_error_row(real_worker, tiny_engine):
    long_text = " x" * (tiny_engine.max_prompt_tokens + 10)
    rows = real_worker(batch([long_text, "hello"])).to_pylist()
    assert rows[0]["status"] == "error" and "the model takes at most" in rows[0]["error"]
    assert rows[1]["status"] == "ok"


def test_real_engine_rejects_what_the_worker_lets_through(tiny_engine):
    # the worker validates first, but if the engine still raises InputError the row (not the batch) fails
    class Unchecked(Task):
        kind = "unchecked"

        def count_tokens(self, engine, plan):
            return 0

    w = worker(Unchecked(), max_input_chars=10**6, engine=tiny_engine)[0]
    rows = w(batch([" x" * (tiny_engine.max_prompt_tokens + 10), "hello"])).to_pylist()
    assert rows[0]["status"] == "error" and rows[0]["error"].startswith("generation failed: InputError")
    assert rows[1]["status"] == "ok"
    assert issubclass(InputError, ValueError)


def test_output_schema_columns_are_the_contract():
    assert OUTPUT_SCHEMA.names == ["id", "status", "error", "output", "num_output_tokens", "num_passes",
                                   "tokens_per_pass", "num_self_corrections", "seconds", "model",
                                   "sampling_hash"]
