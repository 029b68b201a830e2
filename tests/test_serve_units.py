"""Serve pieces without Ray: the config, request validation, and canvas-by-canvas generation on the tiny engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import SamplingParams
from workers.openai_protocol import APIError, ChatCompletionRequest, CompletionRequest, EditRequest, parse_request
from pipelines.serve_config import ServeConfigError, load_serve_config, validate_serve_config
from workers.serve_generation import EditWork, Row, generate_rows, run_edit_works

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------- config

def test_repo_serve_config_is_valid_and_loopback():
    cfg = load_serve_config(ROOT / "configs" / "serve.yaml")
    assert cfg.model_name == "redraft-demo"
    assert (cfg.http.host, cfg.http.port, cfg.http.allow_public_bind) == ("127.0.0.1", 8000, False)
    assert cfg.deployment.num_replicas == 1
    cfg.check_bind(api_key_set=False)


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ServeConfigError, match=r"http\.hots: unknown field"):
        validate_serve_config({"engine": {"checkpoint": "x"}, "http": {"hots": "a"}})
    with pytest.raises(ServeConfigError, match="num_replicas or autoscaling"):
        validate_serve_config({"engine": {"checkpoint": "x"},
                               "deployment": {"num_replicas": 2, "autoscaling": {"max_replicas": 3}}})
    with pytest.raises(ServeConfigError, match=r"sampling\.entropy_bound"):
        validate_serve_config({"engine": {"checkpoint": "x"}, "sampling": {"entropy_bound": -1}})
    cfg = load_serve_config(ROOT / "configs" / "serve.yaml", ["deployment.max_batch_size=3", "http.port=9001"])
    assert (cfg.deployment.max_batch_size, cfg.http.port) == (3, 9001)


def test_autoscaling_section():
    cfg = validate_serve_config({"engine": {"checkpoint": "x"}, "deployment": {
        "autoscaling": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 3}}})
    assert cfg.deployment.num_replicas is None and cfg.deployment.autoscaling.max_replicas == 4
    with pytest.raises(ServeConfigError, match="max_replicas"):
        validate_serve_config({"engine": {"checkpoint": "x"},
                               "deployment": {"autoscaling": {"min_replicas": 3, "max_replicas": 2}}})


def test_public_bind_needs_a_key_or_explicit_permission():
    cfg = validate_serve_config({"engine": {"checkpoint": "x"}, "http": {"host": "0.0.0.0"}})
    with pytest.raises(ServeConfigError, match=r"http\.host: '0\.0\.0\.0'.*REDRAFT_API_KEY"):
        cfg.check_bind(api_key_set=False)
    cfg.check_bind(api_key_set=True)
    validate_serve_config({"engine": {"checkpoint": "x"},
                           "http": {"host": "0.0.0.0", "allow_public_bind": True}}).check_bind(api_key_set=False)
    for host in ("127.0.0.1", "localhost", "::1"):
        validate_serve_config({"engine": {"checkpoint": "x"}, "http": {"host": host}}).check_bind(False)


def test_missing_checkpoint_says_how_to_create_it(tmp_path):
    cfg = validate_serve_config({"engine": {"checkpoint": str(tmp_path / "nope")}})
    with pytest.raises(ServeConfigError, match="redraft demo-checkpoint"):
        cfg.check_checkpoint()


def test_start_refuses_before_touching_ray(tmp_path):
    from pipelines.serve_app import start

    cfg = validate_serve_config({"engine": {"checkpoint": str(tmp_path)}, "http": {"host": "0.0.0.0"}})
    with pytest.raises(ServeConfigError, match="http.host"):
        start(cfg, env={})


# --------------------------------------------------------------------------------------------- requests

@pytest.mark.parametrize("model, body, param", [
    (CompletionRequest, b'{"model": "m"}', "prompt"),
    (CompletionRequest, b'{"model": "m", "prompt": "  "}', "prompt"),
    (CompletionRequest, b'{"prompt": "x"}', "model"),
    (CompletionRequest, b'{"model": "m", "prompt": "x", "max_tokens": 0}', "max_tokens"),
    (CompletionRequest, b'{"model": "m", "prompt": "x", "temperature": 3}', "temperature"),
    (CompletionRequest, b'{"model": "m", "prompt": "x", "n": 2}', "n"),
    (CompletionRequest, b'{"model": "m", "prompt": "x", "echo": true}', "echo"),
    (ChatCompletionRequest, b'{"model": "m", "messages": []}', "messages"),
    (ChatCompletionRequest, b'{"model": "m", "messages": [{"role": "robot", "content": "x"}]}', "messages.0.role"),
    (EditRequest, b'{"model": "m", "document": "abc", "spans": [[2, 1]]}', "spans"),
    (EditRequest, b'{"model": "m", "document": "abc", "spans": [[0, 4]]}', "spans"),
    (EditRequest, b'{"model": "m", "document": "abc", "spans": [[0, 2], [1, 3]]}', "spans"),
    (EditRequest, b'{"model": "m", "document": "abc", "spans": [[2, 3], [0, 1]]}', "spans"),
    (EditRequest, b'{"model": "m", "document": "abc", "spans": []}', "spans"),
    (EditRequest, b'{"model": "m", "document": "abc", "spans": [[0]]}', "spans.0.1"),
])
def test_bad_requests_name_the_field(model, body, param):
    with pytest.raises(APIError) as err:
        parse_request(model, body)
    assert err.value.status == 400
    assert err.value.param == param
    assert err.value.body()["error"]["param"] == param


def test_not_json_and_extra_fields():
    with pytest.raises(APIError, match="not valid JSON"):
        parse_request(CompletionRequest, b"{")
    req = parse_request(CompletionRequest, b'{"model": "m", "prompt": ["a", "b"], "top_p": 0.9, "user": "u"}')
    assert req.prompts() == ["a", "b"]
    chat = parse_request(ChatCompletionRequest, b'{"model": "m", "messages": [{"role": "user", "content": "hi"}],'
                                                b' "max_completion_tokens": 5}')
    assert chat.max_tokens == 5
    edit = parse_request(EditRequest, b'{"model": "m", "document": "abc", "spans": [[0, 0], [0, 1], [3, 3]]}')
    assert edit.spans == [(0, 0), (0, 1), (3, 3)]


# --------------------------------------------------------------------------------------------- generation

def _params(**kw):
    base = dict(max_new_tokens=16, max_denoising_steps=4, seed=5)
    return SamplingParams(**{**base, **kw})


def _ids(engine, text):
    return engine.tokenizer.encode(text)


def test_one_canvas_row_equals_the_engine(tiny_engine):
    params = _params(max_new_tokens=tiny_engine.canvas_length, ignore_eos=True)
    prompt = _ids(tiny_engine, "def read_config(path):")
    expected = tiny_engine.generate_ids([prompt], params, seeds=[params.seed])[0]
    row = Row(prompt, params)
    generate_rows(tiny_engine, [row])
    assert row.tokens == expected.token_ids
    assert row.num_passes == expected.num_passes and row.num_canvases == 1
    assert row.finish == "length"


def test_rows_do_not_depend_on_their_batch(tiny_engine):
    prompts = ["import os\n", "class Parser:", "The quick brown fox", "for i in range("]
    params = [_params(max_new_tokens=40, seed=s, ignore_eos=True) for s in (1, 2, 3, 4)]
    alone = []
    for p, prm in zip(prompts, params):
        row = Row(_ids(tiny_engine, p), prm)
        generate_rows(tiny_engine, [row])
        alone.append(row)
    together = [Row(_ids(tiny_engine, p), prm) for p, prm in zip(prompts, params)]
    # a different budget in the batch: rows with other settings run in their own group
    together.append(Row(_ids(tiny_engine, "x = "), _params(max_new_tokens=3)))
    generate_rows(tiny_engine, together)
    for a, b in zip(alone, together):
        assert a.tokens == b.tokens and a.text == b.text
        assert len(a.tokens) == 40 and a.num_canvases == 3 and a.finish == "length"
    assert len(together[-1].tokens) <= 3


def test_commits_and_drafts_stream_the_final_text(tiny_engine):
    events = []
    row = Row(_ids(tiny_engine, "def main():"), _params(max_new_tokens=40, ignore_eos=True), drafts=True,
              emit=events.append)
    generate_rows(tiny_engine, [row])
    commits = [e["delta"] for e in events if e["kind"] == "commit"]
    drafts = [e for e in events if e["kind"] == "draft"]
    assert "".join(commits) == row.text
    assert len(drafts) == row.num_passes
    assert {d["canvas"] for d in drafts} == {0, 1, 2}
    first = [d["pass"] for d in drafts if d["canvas"] == 0]
    assert first == list(range(1, len(first) + 1))


def test_stop_strings_cut_the_text(tiny_engine):
    params = _params(max_new_tokens=40, ignore_eos=True)
    free = Row(_ids(tiny_engine, "def main():"), params)
    generate_rows(tiny_engine, [free])
    stop = free.text[5:8]
    assert stop and free.text.find(stop) >= 0
    events = []
    cut = Row(_ids(tiny_engine, "def main():"), params, stop=[stop], emit=events.append)
    generate_rows(tiny_engine, [cut])
    assert cut.text == free.text[:free.text.find(stop)]
    assert cut.finish == "stop"
    assert "".join(e["delta"] for e in events) == cut.text


def test_multi_canvas_rows_equal_the_engine_loop(tiny_engine):
    """Serve runs the engine's own loop: every canvas of a row, not only the first, equals ``generate_ids`` with
    the row's seed (no committed prefix re-encoded, one generator per row across canvases)."""
    prompts = [_ids(tiny_engine, p) for p in ("def main():", "import sys\n", "x = [")]
    params = _params(max_new_tokens=40, seed=0)
    seeds = [11, 12, 13]
    expected = tiny_engine.generate_ids(prompts, params, seeds=seeds)
    rows = [Row(p, _params(max_new_tokens=40, seed=s)) for p, s in zip(prompts, seeds)]
    generate_rows(tiny_engine, rows)
    for row, exp in zip(rows, expected):
        assert row.tokens == exp.token_ids and row.text == exp.text
        assert (row.num_canvases, row.num_passes) == (exp.num_canvases, exp.num_passes)


def test_cli_serve_refuses_a_missing_checkpoint(tmp_path, capsys):
    from pipelines.cli import main

    code = main(["serve", str(ROOT / "configs" / "serve.yaml"), "--set", f"engine.checkpoint={tmp_path / 'none'}"])
    assert code == 2
    assert "redraft demo-checkpoint" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- clamped canvases

def _edit_work(engine, document, spans, seed, window_tokens=256):
    from engine.tasks.editing import EditJob
    from engine.tasks import EditTask

    task = EditTask(window_tokens=window_tokens, max_span_tokens=12)
    job = task.layout(engine, EditJob(document, spans))
    return EditWork(job, _params(seed=seed), task.context_tokens)


def test_edit_works_give_per_span_fills_like_the_bulk_path(tiny_engine):
    from engine.tasks.editing import assemble, run_edit_jobs, span_fills

    doc = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
    # a span at the start, adjacent spans, an empty span, and a long span cut into several holes (window 3)
    spans = [(0, 5), (5, 10), (16, 16), (23, 60)]
    works = [_edit_work(tiny_engine, doc, spans, seed=s, window_tokens=3) for s in (1, 2)]
    assert len(works[0].job.holes) > len(spans)  # the long span really is several holes
    run_edit_works(tiny_engine, works)
    for work in works:
        assert work.error is None
        fills = span_fills(work.job, work.fills)
        assert len(fills) == len(spans)
        assert assemble(doc, spans, fills) == work.result.text
    # the bulk path gives the same documents from the same seeds
    bulk = [_edit_work(tiny_engine, doc, spans, seed=s, window_tokens=3) for s in (1, 2)]
    out = run_edit_jobs(tiny_engine, [w.job for w in bulk], bulk[0].params, [1, 2], bulk[0].context_tokens)
    assert [r.text for r in out] == [w.result.text for w in works]


def test_edit_work_failure_marks_only_its_group(tiny_engine):
    good = _edit_work(tiny_engine, "one two three", [(4, 7)], seed=1)
    bad = _edit_work(tiny_engine, "one two three", [(4, 7)], seed=1)
    bad.params = _params(seed=1, max_denoising_steps=5)  # another group
    bad.job.holes[0].budget = 10**6  # the engine refuses a canvas longer than its positions
    run_edit_works(tiny_engine, [good, bad])
    assert good.error is None and good.result is not None
    assert bad.error and bad.result is None


def test_infill_work_keeps_the_budget_and_no_special_tokens(tiny_engine):
    from engine.tasks import InfillTask

    task = InfillTask(fill_tokens=20)
    job = task.layout(tiny_engine, task.plan({"columns": {"prefix": "def add(a, b):\n    return ",
                                                          "suffix": "\n\nprint(add(1, 2))"}}))
    works = [EditWork(job, _params(seed=s), task.context_tokens) for s in range(4)]
    run_edit_works(tiny_engine, works)
    special = set(tiny_engine.eos_ids) | {tiny_engine.config.pad_token_id} | tiny_engine.tokenizer.special_ids()
    for work in works:
        ids = work.result.token_ids
        assert len(ids) <= 20 and not special & set(ids)
        assert work.result.text == tiny_engine.tokenizer.decode(ids) == "".join(work.fills)


def test_cli_serve_refuses_a_taken_port_before_announcing_it(tiny_checkpoint, monkeypatch, capsys):
    import socket

    from pipelines.cli import main

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        code = main(["serve", str(ROOT / "configs" / "serve.yaml"), "--set", f"engine.checkpoint={tiny_checkpoint}",
                     "--set", "http.host=127.0.0.1", "--set", f"http.port={port}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [f"redraft serve: error: http.port: 127.0.0.1:{port} is already in use by "
                                        f"another process; stop it or choose another port, e.g. --set "
                                        f"http.port={port + 1}"]


def test_port_check_passes_on_a_free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    validate_serve_config({"engine": {"checkpoint": "c"}, "http": {"port": port}}).check_port()


def test_serve_refuses_a_checkpoint_without_tokenizer(tiny_checkpoint, tmp_path, capsys):
    import shutil

    from pipelines.cli import main

    ckpt = tmp_path / "no-tok"
    shutil.copytree(tiny_checkpoint, ckpt)
    (ckpt / "tokenizer.json").unlink()
    code = main(["serve", str(ROOT / "configs" / "serve.yaml"), "--set", f"engine.checkpoint={ckpt}"])
    assert code == 2
    assert f"engine.checkpoint: {ckpt} has no tokenizer.json" in capsys.readouterr().err


def test_every_error_has_the_openai_shape_5xx_included():
    import asyncio
    import json

    from fastapi.testclient import TestClient

    from workers.serve import _unexpected_error, api

    response = TestClient(api).get("/v1/no-such-route")
    assert response.status_code == 404
    assert response.json() == {"error": {"message": "Not Found", "type": "invalid_request_error", "param": None,
                                         "code": None}}
    answer = asyncio.run(_unexpected_error(None, RuntimeError("the model broke")))
    assert answer.status_code == 500
    assert json.loads(answer.body) == {"error": {"message": "internal error: RuntimeError: the model broke",
                                                 "type": "server_error", "param": None, "code": None}}
