"""Serve's per-request limits and odd-but-valid input, without Ray: prompt and token caps, lone surrogates, chat
content as text parts, and abandoned edit / infill work stopping between windows (on the tiny engine)."""

from __future__ import annotations

import json

import pytest

from workers.openai_protocol import APIError, ChatCompletionRequest, CompletionRequest, parse_request
from pipelines.serve_config import validate_serve_config
from workers.serve_generation import run_edit_works
from workers.serve_limits import TokenBudget, encode_prompts
from tests.test_serve_units import _edit_work


def _raw(body: dict) -> bytes:
    return json.dumps(body).encode()


def test_the_caps_are_config_fields_with_defaults():
    http = validate_serve_config({"engine": {"checkpoint": "x"}}).http
    assert (http.max_prompts_per_request, http.max_request_tokens) == (64, 65_536)
    with pytest.raises(Exception, match="http.max_prompts_per_request: Input should be greater than or equal to 1"):
        validate_serve_config({"engine": {"checkpoint": "x"}, "http": {"max_prompts_per_request": 0}})


def test_too_many_prompts_is_refused_before_any_is_tokenized():
    seen = []

    def encode(text, param):
        seen.append(text)
        return [1] * len(text)

    with pytest.raises(APIError) as err:
        encode_prompts(encode, ["x"] * 10_000, 16, 64, 65_536)
    assert (err.value.status, err.value.param, err.value.code) == (400, "prompt", "request_too_large")
    assert "10000 prompts in one request; this server takes at most 64 (http.max_prompts_per_request)" in \
        err.value.message
    assert seen == []
    # the token cap stops tokenizing as soon as the sum is over it
    with pytest.raises(APIError) as err:
        encode_prompts(encode, ["abcd"] * 50, 16, 64, 100)  # 20 tokens per prompt: the 6th is over 100
    assert err.value.param == "prompt" and "http.max_request_tokens" in err.value.message and len(seen) == 6
    assert encode_prompts(encode, ["ab", "c"], 16, 2, 35) == [[1, 1], [1]]  # 18 + 17 = 35: at the cap is fine


def test_an_edit_counts_max_tokens_per_span():
    budget = TokenBudget(64, 1000, "document")
    with pytest.raises(APIError, match=r"document: the request asks for over 1000 tokens") as err:
        budget.add(100, 64 * 15)
    assert err.value.param == "document"


@pytest.mark.parametrize("body, param", [
    ({"model": "m", "prompt": "a \ud800 b"}, "prompt"),
    ({"model": "m", "prompt": ["fine", "x\udfff"]}, "prompt.1"),
    ({"model": "m", "prompt": "x", "stop": ["\ud83d"]}, "stop.0"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi \ud800"}]}, "messages.0.content"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]},
     "messages.0.content.0.text"),
])
def test_lone_surrogates_are_a_400_naming_the_field(body, param):
    raw = json.dumps(body).encode()  # ensure_ascii: the valid JSON escape "\ud800", as a client sends it
    with pytest.raises(APIError) as err:
        parse_request(ChatCompletionRequest if "messages" in body else CompletionRequest, raw)
    assert (err.value.status, err.value.param) == (400, param)
    assert "is not valid Unicode (a lone surrogate" in err.value.message
    # a surrogate pair is one valid character
    assert parse_request(CompletionRequest, _raw({"model": "m", "prompt": "ok \ud83d\ude00"})).prompt == "ok \U0001f600"


def test_chat_content_may_be_a_list_of_text_parts():
    req = parse_request(ChatCompletionRequest, _raw({"model": "m", "messages": [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]}]}))
    assert req.template_messages() == [{"role": "system", "content": "Be brief."},
                                       {"role": "user", "content": "Hello\nthere"}]
    with pytest.raises(APIError) as err:
        parse_request(ChatCompletionRequest, _raw({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "http://x"}}]}]}))
    assert err.value.param == "messages.0.content"
    assert "part 1 has type 'image_url'; this server takes text parts only" in err.value.message


class _CancelAfter:
    """The tiny engine, counting denoising calls; after ``n`` of them the works' client 'goes away'."""

    def __init__(self, engine, works, n):
        self.engine, self.works, self.n, self.calls = engine, works, n, 0

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def denoise_canvases(self, *args, **kwargs):
        self.calls += 1
        out = self.engine.denoise_canvases(*args, **kwargs)
        if self.calls >= self.n:
            for work in self.works:
                work.cancelled = True
        return out


def test_abandoned_edit_work_stops_at_the_next_window(tiny_engine):
    doc = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
    spans = [(0, 5), (6, 10), (11, 16), (17, 22), (23, 30)]
    full = _CancelAfter(tiny_engine, [], 10**9)
    run_edit_works(full, [_edit_work(tiny_engine, doc, spans, seed=1, window_tokens=3)])
    assert full.calls >= 3  # uncancelled, the job takes several windows
    works = [_edit_work(tiny_engine, doc, spans, seed=1, window_tokens=3)]
    cancelling = _CancelAfter(tiny_engine, works, 1)
    run_edit_works(cancelling, works)
    assert cancelling.calls == 1 and works[0].result is None and works[0].error.startswith("cancelled")
    # cancelled before its batch ran: no engine call at all
    skipped = _CancelAfter(tiny_engine, [], 10**9)
    late = _edit_work(tiny_engine, doc, spans, seed=1, window_tokens=3)
    late.cancelled = True
    run_edit_works(skipped, [late])
    assert skipped.calls == 0


def test_the_load_mix_sends_every_kind_and_each_malformed_request():
    from benchmarks.serve_load import MALFORMED, _body, _kinds, summarize

    kinds = _kinds(100)
    assert {"plain", "stream", "chat_parts", "chat_stream", "infill", "edit", "drop_stream", "drop_plain"} <= set(kinds)
    malformed = [_body(k, i)[1] for i, k in enumerate(kinds) if k == "malformed"]
    assert sorted(malformed) == sorted(b for b, _ in MALFORMED)
    out = summarize([{"kind": "plain", "status": 200, "seconds": s} for s in (1.0, 2.0, 9.0)] +
                    [{"kind": "malformed", "status": 400, "seconds": 0.1}], None, 3.0)
    assert (out["valid_ok"], out["malformed_4xx"], out["p50_s"], out["p99_s"]) == (3, 1, 2.0, 9.0)
