"""The Serve app end to end: deployed on the session's local Ray, called with the official ``openai`` client and
with plain HTTP (``requests``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.serve_fixtures import API_KEY, MODEL, deploy, ray_cluster, serve_app, serve_config  # noqa: F401

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def client(serve_app):  # noqa: F811
    return openai.OpenAI(base_url=serve_app + "/v1", api_key="unused", max_retries=0, timeout=120)


def _post(url, path, **body):
    return requests.post(url + path, json=body, timeout=120)


def test_models(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_completion_is_seeded_and_within_budget(client):
    first = client.completions.create(model=MODEL, prompt="def parse(text):", max_tokens=12, seed=3)
    again = client.completions.create(model=MODEL, prompt="def parse(text):", max_tokens=12, seed=3)
    choice = first.choices[0]
    assert choice.text == again.choices[0].text
    assert choice.finish_reason in ("stop", "length")
    assert 0 < first.usage.completion_tokens <= 12
    assert first.usage.prompt_tokens > 0
    assert choice.model_extra["redraft"]["num_passes"] >= 1


def test_completion_with_suffix_is_a_budgeted_fill(client):
    kw = dict(model=MODEL, prompt="x = [1, 2, ", suffix="]\nprint(x)", max_tokens=6, seed=1)
    infill = client.completions.create(**kw)
    again = client.completions.create(**kw)
    choice = infill.choices[0]
    assert choice.text == again.choices[0].text  # seeded
    assert choice.finish_reason in ("stop", "length")
    assert infill.usage.completion_tokens <= 6
    assert "<pad>" not in choice.text and "<eos>" not in choice.text  # unused positions are dropped, not decoded
    assert choice.model_extra["redraft"]["num_passes"] >= 1
    # streaming with a suffix: the fill as one chunk, then the finish chunk (and usage when asked)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == infill.usage.completion_tokens
    texts = [c.choices[0].text for c in chunks[:-1]]
    assert "".join(texts) == choice.text and len([t for t in texts if t]) <= 1
    assert chunks[-2].choices[0].finish_reason == choice.finish_reason
    # stop strings cut the fill
    assert len(choice.text) > 1
    stop = choice.text[1:5]
    cut = client.completions.create(stop=[stop], **kw).choices[0]
    assert cut.text == choice.text[:choice.text.find(stop)] and cut.finish_reason == "stop"


def test_chat(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}],
        max_tokens=10, seed=2)
    msg = reply.choices[0].message
    assert msg.role == "assistant" and isinstance(msg.content, str)
    assert reply.usage.completion_tokens <= 10


def test_streaming_matches_the_plain_answer(client):
    kw = dict(model=MODEL, prompt="while True:", max_tokens=40, seed=4, temperature=0.7)
    whole = client.completions.create(**kw)
    chunks = list(client.completions.create(stream=True, **kw))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_chat_streaming_with_drafts_and_usage(client):
    kw = dict(model=MODEL, messages=[{"role": "user", "content": "Write a loop."}], max_tokens=24, seed=6)
    whole = client.chat.completions.create(**kw)
    stream = client.chat.completions.create(stream=True, stream_options={"include_usage": True},
                                            extra_body={"include_drafts": True}, **kw)
    chunks = list(stream)
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage.completion_tokens == whole.usage.completion_tokens
    deltas = [c.choices[0].delta.content or "" for c in chunks[:-1]]
    assert "".join(deltas) == whole.choices[0].message.content
    drafts = [c.choices[0].model_extra.get("draft") for c in chunks[:-1]]
    drafts = [d for d in drafts if d is not None]
    assert len(drafts) == chunks[-2].choices[0].model_extra["redraft"]["num_passes"]


def test_concurrent_requests_share_batches_and_keep_their_answers(client):
    prompts = [f"def handler_{i}(event):" for i in range(6)]
    alone = [client.completions.create(model=MODEL, prompt=p, max_tokens=16, seed=i).choices[0].text
             for i, p in enumerate(prompts)]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda ip: client.completions.create(
            model=MODEL, prompt=ip[1], max_tokens=16, seed=ip[0]).choices[0].text, enumerate(prompts)))
    assert together == alone


def test_edits_keep_text_outside_spans_and_point_at_the_replacements(serve_app):  # noqa: F811
    doc = "The cat sat on the mat. It was happy. The end."
    # a span at the very start, adjacent spans, an empty span (an insertion) and one at the very end
    spans = [[0, 3], [4, 7], [7, 11], [24, 37], [37, 37], [46, 46]]
    r = _post(serve_app, "/v1/edits", model=MODEL, document=doc, spans=spans, instruction="Make it a dog.", seed=1,
              max_tokens=5)
    assert r.status_code == 200, r.text
    body = r.json()
    new, new_spans = body["document"], body["spans"]
    assert body["choices"][0]["text"] == new and len(new_spans) == len(spans)
    # every byte outside the spans is where the new spans say it is, and the spans hold the replacements
    old_cursor = new_cursor = 0
    for (s, e), (ns, ne) in zip(spans, new_spans):
        assert new[new_cursor:ns] == doc[old_cursor:s]
        assert ns <= ne
        old_cursor, new_cursor = e, ne
    assert new[new_cursor:] == doc[old_cursor:]
    assert 0 < body["usage"]["completion_tokens"] <= 5 * len(spans)
    again = _post(serve_app, "/v1/edits", model=MODEL, document=doc, spans=spans, instruction="Make it a dog.",
                  seed=1, max_tokens=5).json()
    assert again["document"] == new and again["spans"] == new_spans
    # no instruction, the default budget
    r = _post(serve_app, "/v1/edits", model=MODEL, document=doc, spans=[[0, 0]], seed=2)
    assert r.status_code == 200, r.text
    ns, ne = r.json()["spans"][0]
    assert ns == 0 and r.json()["document"][ne:] == doc


@pytest.mark.parametrize("body, status, param", [
    ({"model": "gpt-4", "prompt": "x"}, 404, "model"),
    ({"model": MODEL}, 400, "prompt"),
    ({"model": MODEL, "prompt": "x", "max_tokens": 65}, 400, "max_tokens"),
    ({"model": MODEL, "prompt": "x", "temperature": -1}, 400, "temperature"),
])
def test_completion_errors(serve_app, body, status, param):  # noqa: F811
    r = requests.post(serve_app + "/v1/completions", json=body, timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]


def test_errors_through_the_openai_client(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.completions.create(model="nope", prompt="x")
    assert err.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=10_000)
    assert err.value.body["param"] == "max_tokens"


def test_body_over_limit_and_bad_spans(serve_app):  # noqa: F811
    r = requests.post(serve_app + "/v1/completions", json={"model": MODEL, "prompt": "x" * 5000}, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = _post(serve_app, "/v1/edits", model=MODEL, document="abc", spans=[[1, 2], [0, 3]])
    assert r.status_code == 400 and r.json()["error"]["param"] == "spans"
    r = _post(serve_app, "/v1/edits", model=MODEL, document="abc", spans=[[0, 9]])
    assert r.status_code == 400 and r.json()["error"]["param"] == "spans"
    r = requests.post(serve_app + "/v1/chat/completions", data=b"{nope", timeout=60)
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]


@pytest.mark.slow
def test_bearer_token(ray_cluster, tiny_checkpoint):  # noqa: F811
    from ray import serve

    url = deploy("redraft-secure", "/secure", serve_config(tiny_checkpoint, model_name="redraft-secure"),
                 api_key=API_KEY)
    try:
        r = requests.get(url + "/v1/models", timeout=60)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = requests.get(url + "/v1/models", headers={"Authorization": "Bearer wrong"}, timeout=60)
        assert r.status_code == 401
        good = openai.OpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0)
        out = good.completions.create(model="redraft-secure", prompt="x = ", max_tokens=4, seed=0)
        assert out.usage.completion_tokens <= 4
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
    finally:
        serve.delete("redraft-secure")


def test_concurrent_infills_share_batches_and_keep_their_answers(client):
    prompts = [f"def handler_{i}(event):\n    return " for i in range(4)]
    kw = dict(model=MODEL, suffix="\n\nprint(1)", max_tokens=8)
    alone = [client.completions.create(prompt=p, seed=i, **kw).choices[0].text for i, p in enumerate(prompts)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda ip: client.completions.create(prompt=ip[1], seed=ip[0], **kw)
                                 .choices[0].text, enumerate(prompts)))
    assert together == alone


def test_completions_equal_a_bulk_job_byte_for_byte(serve_app, tiny_checkpoint, tmp_path):
    """One generation loop: the same prompt, seed and parameters give the same text from ``redraft run`` and
    from ``/v1/completions`` (a job row's seed is ``row_seed(sampling.seed, id)``), over several canvases."""
    from pipelines.config import validate_config
    from pipelines.run import run_job
    from tests.pipeline_fixtures import job_config, read_output, write_jsonl
    from workers.batch import row_seed

    rows = [{"id": f"r{i}", "text": t} for i, t in enumerate(["def parse(text):", "import os\n", "The report"])]
    cfg = job_config(tiny_checkpoint, write_jsonl(tmp_path / "in" / "p.jsonl", rows), tmp_path / "out",
                     sampling={"max_new_tokens": 40, "max_denoising_steps": 4, "seed": 9})
    run_job(validate_config(cfg))
    job = {r["id"]: r for r in read_output(tmp_path / "out")}
    for row in rows:
        answer = _post(serve_app, "/v1/completions", model=MODEL, prompt=row["text"], max_tokens=40,
                       seed=row_seed(9, row["id"])).json()
        assert answer["choices"][0]["text"] == job[row["id"]]["output"], row["id"]
        assert answer["choices"][0]["redraft"]["num_passes"] == job[row["id"]]["num_passes"]
    assert max(r["num_output_tokens"] for r in job.values()) > 16  # past the tiny model's first canvas


def test_a_request_over_the_caps_is_a_400_naming_the_field(serve_app):  # noqa: F811
    # the fixture's caps: 16 prompts, 1024 tokens (prompt tokens + max_tokens over the prompts)
    r = _post(serve_app, "/v1/completions", model=MODEL, prompt=["x"] * 17, max_tokens=4)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["param"], err["code"]) == ("prompt", "request_too_large") and "http.max_prompts_per_request" in \
        err["message"]
    r = _post(serve_app, "/v1/completions", model=MODEL, prompt=["x"] * 17, suffix="y", max_tokens=4)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    r = _post(serve_app, "/v1/completions", model=MODEL, prompt=["x = 1"] * 16, max_tokens=64)
    assert r.status_code == 400 and "http.max_request_tokens" in r.json()["error"]["message"]
    doc = " ".join(f"w{i}" for i in range(40))
    r = _post(serve_app, "/v1/edits", model=MODEL, document=doc, spans=[[3 * i, 3 * i + 2] for i in range(17)])
    assert r.status_code == 400 and r.json()["error"]["param"] == "document", r.text
    r = _post(serve_app, "/v1/completions", model=MODEL, prompt=["x = 1"] * 16, max_tokens=4)
    assert r.status_code == 200 and len(r.json()["choices"]) == 16


def test_lone_surrogates_and_chat_text_parts(serve_app, client):  # noqa: F811
    raw = b'{"model": "' + MODEL.encode() + b'", "prompt": ["ok", "a \\ud800 b"], "max_tokens": 4}'
    r = requests.post(serve_app + "/v1/completions", data=raw, headers={"Content-Type": "application/json"},
                      timeout=60)
    assert r.status_code == 400, r.text  # was a 500 (the tokenizer's TypeError)
    assert r.json()["error"]["param"] == "prompt.1" and "lone surrogate" in r.json()["error"]["message"]
    parts = [{"type": "text", "text": "Say hi"}, {"type": "text", "text": "briefly."}]
    out = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": parts}], max_tokens=4,
                                         seed=2)
    plain = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hi\nbriefly."}],
                                           max_tokens=4, seed=2)
    assert out.choices[0].message.content == plain.choices[0].message.content
