"""Request and response shapes of redraft's OpenAI-compatible HTTP API (pydantic v2), and its error shape.

Requests are validated here; ``parse_request`` turns a raw body into a model or an ``APIError`` whose ``param``
names the offending field, answered as ``{"error": {"message", "type", "param", "code"}}`` like OpenAI's API.
Unknown request fields are ignored (clients send options such as ``top_p`` or ``user`` that do not apply to a
diffusion sampler); options that would silently change the answer's meaning (``n`` > 1, ``logprobs``, ``echo``,
``best_of``) are rejected.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class APIError(Exception):
    """An error answered in OpenAI's shape. ``param`` names the request field at fault (or None)."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(description="Model name, as listed by GET /v1/models.")
    max_tokens: int | None = Field(default=None, ge=1, description="Tokens to generate at most (per prompt, "
                                   "per span for edits). Default: the server's sampling.max_new_tokens.")
    temperature: float | None = Field(default=None, ge=0, le=2, description="Scales the server's temperature "
                                      "schedule (t_max..t_min); 1 keeps it, 0 is (nearly) greedy.")
    seed: int | None = Field(default=None, ge=0, lt=2**63, description="Seed; the same request with the same "
                             "seed gives the same text. Default: a random seed.")
    stop: str | list[str] | None = Field(default=None, description="Up to 4 strings; the text ends before the "
                                         "first one generated.")
    n: int = Field(default=1, ge=1, le=1, description="Choices per prompt; only 1 is supported.")

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value):
        if value is None:
            return None
        value = [value] if isinstance(value, str) else value
        if len(value) > 4 or any(not s for s in value):
            raise ValueError("at most 4 non-empty strings")
        return value


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = Field(default=False, description="Send a last chunk carrying the usage.")


class _Streaming(_Request):
    stream: bool = Field(default=False, description="Answer with server-sent events, one chunk per committed "
                         "canvas, then 'data: [DONE]'.")
    stream_options: StreamOptions | None = None
    include_drafts: bool = Field(default=False, description="redraft extension (with stream): also send a "
                                 "chunk after every denoising pass whose 'draft' field holds the current canvas "
                                 "text and whose text / delta is empty.")


class CompletionRequest(_Streaming):
    prompt: str | list[str] = Field(description="The prompt, or a list of prompts (one choice each).")
    suffix: str | None = Field(default=None, description="Text that follows the completion (infilling).")
    logprobs: int | None = Field(default=None, le=0, description="Not supported (must be null or 0).")
    echo: bool = Field(default=False, description="Not supported (must be false).")
    best_of: int | None = Field(default=None, ge=1, le=1, description="Not supported (must be null or 1).")

    @field_validator("prompt")
    @classmethod
    def _prompts_present(cls, value):
        prompts = [value] if isinstance(value, str) else value
        if not prompts:
            raise ValueError("must not be an empty list")
        if any(not p.strip() for p in prompts):
            raise ValueError("must not be empty")
        return value

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value):
        if value:
            raise ValueError("not supported; must be false")
        return value

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart] = Field(description="The text, or a list of text parts "
                                             "(``[{\"type\": \"text\", \"text\": ...}]``, joined by newlines).")

    @field_validator("content")
    @classmethod
    def _text_parts_only(cls, value):
        if isinstance(value, str):
            return value
        for i, part in enumerate(value):
            if part.type != "text" or part.text is None:
                raise ValueError(f"part {i} has type {part.type!r}; this server takes text parts only "
                                 "({'type': 'text', 'text': ...})")
        return value

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "\n".join(p.text for p in self.content)


class ChatCompletionRequest(_Streaming):
    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")
    max_completion_tokens: int | None = Field(default=None, ge=1, description="Newer name of max_tokens.")
    logprobs: bool = Field(default=False, description="Not supported (must be false).")

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value):
        if value:
            raise ValueError("not supported; must be false")
        return value

    def template_messages(self) -> list[dict]:
        """The conversation as the chat template takes it (each message's content as one string)."""
        return [{"role": m.role, "content": m.text()} for m in self.messages]

    @model_validator(mode="after")
    def _one_max(self):
        if self.max_completion_tokens is not None:
            if self.max_tokens is not None and self.max_tokens != self.max_completion_tokens:
                raise ValueError("max_tokens and max_completion_tokens disagree; send one of them")
            self.max_tokens = self.max_completion_tokens
        return self


class EditRequest(_Request):
    document: str = Field(description="The document to edit.")
    spans: list[tuple[int, int]] = Field(
        min_length=1, description="[start, end) character offsets (Python string indices) of the parts to "
        "regenerate: 0 <= start <= end <= len(document), sorted, not overlapping. start == end inserts.")
    instruction: str | None = Field(default=None, description="What to do (written before the text the "
                                    "replacement is conditioned on).")

    @model_validator(mode="after")
    def _spans_fit(self):
        previous_end = 0
        for i, (start, end) in enumerate(self.spans):
            if not 0 <= start <= end <= len(self.document):
                raise ValueError(f"span {i} [{start}, {end}) must satisfy 0 <= start <= end <= len(document) "
                                 f"({len(self.document)})")
            if start < previous_end:
                raise ValueError(f"span {i} [{start}, {end}) overlaps or precedes the span before it; spans must "
                                 f"be sorted and not overlap")
            previous_end = end
        return self


def _param(error: dict) -> str:
    loc = [str(p) for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    # a model-level validator reports no location: name the field its message is about
    if not loc and "span" in error.get("msg", ""):
        return "spans"
    if not loc and "max_completion_tokens" in error.get("msg", ""):
        return "max_tokens"
    # list / union members: "prompt.str" or "spans.0.1" -> name the field and the index
    return ".".join(p for p in loc if p not in ("str", "list[str]", "tuple[int, int]", "list[ContentPart]"))


def unicode_problem(text: str) -> str | None:
    """Why a Python string cannot be written as UTF-8 (a lone surrogate), or None: the text check of request
    bodies here and of input rows (``pipelines/input_rows.py``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"is not valid Unicode (a lone surrogate {ascii(text[err.start])} at character {err.start})"
    return None


def unicode_problem_path(value, path: tuple = ()) -> tuple[str, str] | None:
    """``(dotted path, problem)`` of the first string in a decoded JSON body that no tokenizer can take (a lone
    surrogate, such as the valid JSON escape ``"\\ud800"``), or None."""
    if isinstance(value, str):
        problem = unicode_problem(value)
        return (".".join(map(str, path)) or "body", problem) if problem else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and unicode_problem(key):
            return ".".join(map(str, path)) or "body", f"has a key that {unicode_problem(key)}"
        found = unicode_problem_path(item, path + (key,))
        if found is not None:
            return found
    return None


def parse_request(model: type[BaseModel], raw: bytes):
    """Validate a raw JSON body into ``model``; raises ``APIError(400)`` naming the first bad field."""
    try:
        data = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise APIError(400, f"the request body is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object")
    bad = unicode_problem_path(data)
    if bad is not None:
        raise APIError(400, f"{bad[0]}: {bad[1]}", param=bad[0])
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        param = _param(first) or None
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing":
            message = "field required"
        raise APIError(400, f"{param}: {message}" if param else message, param=param) from None
