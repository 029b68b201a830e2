"""redraft on Ray Serve: one engine per replica behind OpenAI's HTTP conventions.

Routes: ``POST /v1/completions`` (``prompt``, ``suffix``, ``max_tokens``, ``temperature``, ``seed``, ``stop``,
``stream``), ``POST /v1/chat/completions``, ``GET /v1/models`` and ``POST /v1/edits`` (``document``, ``spans``,
``instruction``: the text outside the spans is returned unchanged). Errors use OpenAI's error shape and name the
request field at fault (``workers.openai_protocol``).

Infill and edits use clamped canvases, through the bulk tasks' code path (``engine.tasks.InfillTask`` /
``EditTask``, ``engine.tasks.editing``): a completion with ``suffix`` fills a hole of at most ``max_tokens`` tokens
between the prompt and the suffix, the hole seeing both; an edit's spans are holes in the document, each seeing the
text after it too, long documents window by window, every character outside the spans copied from the input.

Scheduling: requests that arrive together are batched by ``@serve.batch``; the batch is then generated canvas by
canvas (``workers.serve_generation``) so every canvas commit can be streamed, and rows with the same sampling
settings share each denoising pass. Infill and edit jobs are batched by a second ``@serve.batch`` method and run
in one ``run_edit_jobs`` call per group of equal sampling settings. Configuration: ``ServeSettings``, built from
``configs/serve.yaml`` by ``pipelines/serve_app.py``.
"""

# No 'from __future__ import annotations': FastAPI must see the route signatures' real types through Serve's
# ingress wrapper.
import asyncio
import dataclasses
import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from ray import serve

from .metrics import metric_tags, record_generation, set_queue_depth
from .openai_protocol import APIError, ChatCompletionRequest, CompletionRequest, EditRequest, parse_request
from .serve_generation import (EditWork, Row, cut_at_stop, generate_rows, result_stats, rows_usage,
                               run_edit_works)
from .serve_limits import TokenBudget, check_prompt_count, encode_prompts
from .serve_settings import ServeSettings

logger = logging.getLogger(__name__)

APP_NAME = "redraft"
DEPLOYMENT_NAME = "RedraftServer"

api = FastAPI(title="redraft", description="OpenAI-compatible text generation with a diffusion language model.")


@api.exception_handler(APIError)
async def _api_error(_request: Request, err: APIError):
    return JSONResponse(err.body(), status_code=err.status)


@api.exception_handler(StarletteHTTPException)
async def _http_error(_request: Request, err: StarletteHTTPException):
    """Unknown routes, wrong methods: OpenAI's error shape too (Starlette answers ``{"detail": ...}``)."""
    return JSONResponse(APIError(err.status_code, str(err.detail), code=None).body(), status_code=err.status_code,
                        headers=getattr(err, "headers", None))


@api.exception_handler(Exception)
async def _unexpected_error(_request: Request, err: Exception):
    """Any other failure (a broken model: NonFiniteError, a bug): 500 in OpenAI's error shape, never plain text."""
    logger.error("request failed: %s: %s", type(err).__name__, err, exc_info=err)
    body = APIError(500, f"internal error: {type(err).__name__}: {err}", type_="server_error").body()
    return JSONResponse(body, status_code=500)


def key_digest(api_key: str | None) -> str | None:
    """What a replica keeps of the bearer token: its SHA-256 (the token itself never enters Serve's config)."""
    return hashlib.sha256(api_key.encode()).hexdigest() if api_key else None


def _sse(data) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress(api)
class RedraftServer:
    """One replica: the engine, a dynamic batcher and the OpenAI routes.

    Args:
        settings: the replica's ``ServeSettings`` (checkpoint path already absolute).
        api_key_sha256: the bearer token's SHA-256, or None when no token is required.
    """

    def __init__(self, settings: ServeSettings, api_key_sha256: str | None = None):
        from .batch import load_engine

        self.cfg = s = settings
        self.engine = load_engine(s.checkpoint, s.device, s.dtype, s.num_threads, s.quantization)
        if s.batch_invariant:
            self.engine.batch_invariant = True
        if self.engine.tokenizer is None:  # check_checkpoint refuses this first; a replica must not look healthy
            raise RuntimeError(f"engine.checkpoint: {s.checkpoint} has no tokenizer.json; Serve cannot serve it")
        self.key_sha256 = api_key_sha256
        self.tags = metric_tags(deployment=DEPLOYMENT_NAME, model=s.model_name)
        self.waiting = 0
        self._run_batch.set_max_batch_size(s.max_batch_size)
        self._run_batch.set_batch_wait_timeout_s(s.batch_wait_timeout_s)
        self._run_edit_batch.set_max_batch_size(s.max_batch_size)
        self._run_edit_batch.set_batch_wait_timeout_s(s.batch_wait_timeout_s)
        set_queue_depth(0, self.tags)

    # ------------------------------------------------------------------------------------------- batching
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _run_batch(self, works: list[list[Row]]) -> list[list[Row]]:
        self.waiting -= len(works)
        set_queue_depth(self.waiting, self.tags)
        rows = [row for work in works for row in work]
        await asyncio.to_thread(generate_rows, self.engine, rows, self.tags)
        ok = [row.result() for row in rows if row.error is None]
        record_generation(ok, self.tags, errors=sum(row.error is not None for row in rows), engine_batch=False)
        return works

    async def _submit(self, rows: list[Row]) -> list[Row]:
        self.waiting += 1
        set_queue_depth(self.waiting, self.tags)
        return await self._run_batch(rows)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _run_edit_batch(self, works: list[list[EditWork]]) -> list[list[EditWork]]:
        """Infill and edit jobs of concurrent requests: their holes are clamped canvases, not prompts, so they
        batch apart from ``_run_batch``'s rows (one ``run_edit_jobs`` call per group of equal settings)."""
        self.waiting -= len(works)
        set_queue_depth(self.waiting, self.tags)
        await asyncio.to_thread(run_edit_works, self.engine, [w for work in works for w in work], self.tags)
        return works

    async def _run_works(self, works: list[EditWork]) -> None:
        self.waiting += 1
        set_queue_depth(self.waiting, self.tags)
        try:
            await self._run_edit_batch(works)
        except asyncio.CancelledError:  # the client went away: its works stop at the next window
            for work in works:
                work.cancelled = True
            raise
        failed = [w for w in works if w.error is not None]
        if failed:
            raise APIError(500, f"generation failed: {failed[0].error}", type_="server_error")

    # ------------------------------------------------------------------------------------------- request checks
    async def _body(self, request: Request) -> bytes:
        if self.key_sha256 is not None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(key_digest(token.strip()) or "",
                                                                    self.key_sha256):
                raise APIError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                               code="invalid_api_key")
        limit = self.cfg.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"the request body is {declared} bytes; this server takes at most {limit} "
                                f"(http.max_body_bytes)", code="request_too_large")
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise APIError(413, f"the request body is over {limit} bytes (http.max_body_bytes)",
                               code="request_too_large")
        return bytes(body)

    def _check_model(self, model: str) -> None:
        if model != self.cfg.model_name:
            raise APIError(404, f"model {model!r} does not exist; this server has {self.cfg.model_name!r}",
                           param="model", code="model_not_found")

    def _budget(self, max_tokens: int | None) -> int:
        limit = self.cfg.max_tokens_limit
        if max_tokens is None:
            return min(self.cfg.sampling.max_new_tokens, limit)
        if max_tokens > limit:
            raise APIError(400, f"max_tokens: {max_tokens} is over this server's limit of {limit}",
                           param="max_tokens")
        return max_tokens

    def _params(self, req, max_new_tokens: int):
        """The request's ``SamplingParams``: the server's defaults, its budget and seed, its temperature scale."""
        base = self.cfg.sampling
        change = {"max_new_tokens": max_new_tokens,
                  "seed": req.seed if req.seed is not None else secrets.randbits(63)}
        if req.temperature is not None:  # OpenAI's temperature scales the schedule; 0 means (nearly) greedy
            scale = max(req.temperature, 1e-3)
            change |= {"t_max": base.t_max * scale, "t_min": base.t_min * scale}
        return dataclasses.replace(base, **change)

    def _encode(self, text: str, param: str) -> list[int]:
        ids = self.engine.tokenizer.encode(text)
        if len(ids) > self.engine.max_prompt_tokens:
            raise APIError(400, f"{param}: the prompt has {len(ids)} tokens; this model takes at most "
                                f"{self.engine.max_prompt_tokens}", param=param, code="context_length_exceeded")
        return ids

    # ------------------------------------------------------------------------------------------- routes
    @api.get("/v1/models")
    async def models(self, request: Request):
        await self._body(request)
        return {"object": "list", "data": [{"id": self.cfg.model_name, "object": "model", "created": 0,
                                            "owned_by": "redraft"}]}

    @api.post("/v1/completions")
    async def completions(self, request: Request):
        req = parse_request(CompletionRequest, await self._body(request))
        self._check_model(req.model)
        params = self._params(req, self._budget(req.max_tokens))
        if req.suffix:
            return await self._infill(req, params)
        ids = encode_prompts(self._encode, req.prompts(), params.max_new_tokens, self.cfg.max_prompts_per_request,
                             self.cfg.max_request_tokens)
        rows = [Row(i, params, stop=req.stop, drafts=req.include_drafts) for i in ids]
        return await self._answer(req, rows, chat=False)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        req = parse_request(ChatCompletionRequest, await self._body(request))
        self._check_model(req.model)
        params = self._params(req, self._budget(req.max_tokens))
        try:
            text = self.engine.apply_chat_template(req.template_messages())
        except Exception as err:  # noqa: BLE001 - the template rejected the conversation
            raise APIError(400, f"messages: the chat template rejected them: {err}", param="messages") from None
        rows = [Row(self._encode(text, "messages"), params, stop=req.stop, drafts=req.include_drafts)]
        TokenBudget(params.max_new_tokens, self.cfg.max_request_tokens, "messages").add(len(rows[0].prompt_ids))
        return await self._answer(req, rows, chat=True)

    @api.post("/v1/edits")
    async def edits(self, request: Request):
        """Each span is a hole of clamped canvases (``EditTask``): its replacement sees the text on both sides;
        ``spans`` in the answer are where the replacements landed in the new document."""
        from engine.tasks import EditJob, EditTask
        from engine.tasks.editing import assemble, replaced_spans, span_fills

        req = parse_request(EditRequest, await self._body(request))
        self._check_model(req.model)
        cap = self._budget(req.max_tokens) if req.max_tokens is not None else self.cfg.max_tokens_limit
        instruction = req.instruction.strip() if req.instruction and req.instruction.strip() else None
        task = EditTask(instruction=instruction, max_span_tokens=cap)
        job = EditJob(req.document, [(start, end) for start, end in req.spans])
        try:
            job = task.layout(self.engine, job)
        except ValueError as err:
            param = "instruction" if instruction and len(task.prompt_head(self.engine)) + self.engine.canvas_length \
                > self.engine.config.max_position_embeddings else "spans"
            raise APIError(400, f"{param}: {err}", param=param, code="context_length_exceeded") from None
        prompt = len(job.prompt_head) + len(self.engine.tokenizer.encode(req.document, add_bos=False))
        TokenBudget(cap, self.cfg.max_request_tokens, "document").add(prompt, cap * len(job.spans))
        work = EditWork(job, self._params(req, cap), task.context_tokens)
        await self._run_works([work])
        replacements = [cut_at_stop(text, req.stop)[0] for text in span_fills(job, work.fills)]
        document = assemble(req.document, job.spans, replacements)
        new_spans = replaced_spans(job.spans, replacements)
        completion = len(work.result.token_ids)
        return {"object": "edit", "created": int(time.time()), "model": self.cfg.model_name,
                "document": document, "spans": new_spans,
                "choices": [{"index": 0, "text": document, "redraft": result_stats(work.result)}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion}}

    def _infill_works(self, req: CompletionRequest, params) -> tuple[list[EditWork], int]:
        """One ``EditWork`` per prompt (its hole between the prompt and ``suffix``) and the prompts' tokens."""
        from engine.tasks import InfillTask

        task = InfillTask(fill_tokens=params.max_new_tokens)
        tok, works, prompt_tokens = self.engine.tokenizer, [], 0
        check_prompt_count(len(req.prompts()), self.cfg.max_prompts_per_request)
        budget = TokenBudget(params.max_new_tokens, self.cfg.max_request_tokens)
        for prompt in req.prompts():
            try:
                job = task.job_for(prompt, req.suffix)
            except ValueError as err:
                raise APIError(400, f"prompt: {err}", param="prompt") from None
            try:
                job = task.layout(self.engine, job)
            except ValueError as err:
                raise APIError(400, f"max_tokens: {err}", param="max_tokens",
                               code="context_length_exceeded") from None
            works.append(EditWork(job, params, task.context_tokens))
            this_prompt = len(job.prompt_head) + len(tok.encode(job.document, add_bos=False))
            budget.add(this_prompt)
            prompt_tokens += this_prompt
        return works, prompt_tokens

    async def _infill(self, req: CompletionRequest, params):
        """A completion with ``suffix``: each prompt is the text before a hole of at most ``max_tokens`` tokens and
        the suffix the text after it (``InfillTask``'s path). A choice's text is the fill only (OpenAI's insert
        mode). The fill is known only when its canvases are done, so a stream sends it as one chunk, then the
        finish chunk."""
        works, prompt_tokens = self._infill_works(req, params)
        head = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": self.cfg.model_name}

        def answer() -> tuple[list[dict], dict]:
            choices, completion = [], 0
            for i, work in enumerate(works):
                text, stopped = cut_at_stop(work.result.text, req.stop)
                finish = "stop" if stopped or work.result.finish_reason == "eos" else "length"
                choices.append({"index": i, "text": text, "logprobs": None, "finish_reason": finish,
                                "redraft": result_stats(work.result)})
                completion += len(work.result.token_ids)
            return choices, {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                             "total_tokens": prompt_tokens + completion}

        if not req.stream:
            await self._run_works(works)
            choices, usage = answer()
            return {**head, "object": "text_completion", "choices": choices, "usage": usage}

        async def events():
            try:
                await self._run_works(works)
            except APIError as err:
                yield _sse(err.body())
                yield _sse("[DONE]")
                return
            choices, usage = answer()
            for choice in choices:
                if choice["text"]:
                    yield _sse({**head, "object": "text_completion", "choices": [
                        {"index": choice["index"], "text": choice["text"], "logprobs": None, "finish_reason": None}]})
                yield _sse({**head, "object": "text_completion", "choices": [{**choice, "text": ""}]})
            if req.stream_options is not None and req.stream_options.include_usage:
                yield _sse({**head, "object": "text_completion", "choices": [], "usage": usage})
            yield _sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream")

    # ------------------------------------------------------------------------------------------- answers
    async def _generate(self, rows: list[Row]) -> None:
        try:
            await self._submit(rows)
        except asyncio.CancelledError:  # the client went away: stop generating for it at the next canvas
            for row in rows:
                row.cancelled = True
            raise
        failed = [row for row in rows if row.error is not None]
        if failed:
            raise APIError(500, f"generation failed: {failed[0].error}", type_="server_error")

    async def _answer(self, req, rows: list[Row], chat: bool):
        head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}", "created": int(time.time()),
                "model": self.cfg.model_name}
        if req.stream:
            return StreamingResponse(self._stream(req, rows, chat, head), media_type="text/event-stream")
        await self._generate(rows)
        choices = []
        for i, row in enumerate(rows):
            choice = {"index": i, "finish_reason": row.finish, "redraft": row.stats()}
            if chat:
                choice["message"] = {"role": "assistant", "content": row.text}
            else:
                choice.update(text=row.text, logprobs=None)
            choices.append(choice)
        return {**head, "object": "chat.completion" if chat else "text_completion", "choices": choices,
                "usage": rows_usage(rows)}

    async def _stream(self, req, rows: list[Row], chat: bool, head: dict):
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        for i, row in enumerate(rows):
            row.emit = lambda event, i=i: loop.call_soon_threadsafe(queue.put_nowait, (i, event))
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(i: int, text: str, finish: str | None = None, **extra) -> dict:
            choice = {"index": i, "finish_reason": finish, **extra}
            if chat:
                choice["delta"] = {"role": "assistant", "content": text} if text or not finish else {}
            else:
                choice.update(text=text, logprobs=None)
            return {**head, "object": obj, "choices": [choice]}

        task = asyncio.ensure_future(self._submit(rows))
        task.add_done_callback(lambda _t: queue.put_nowait(None))
        try:
            while (item := await queue.get()) is not None:
                i, event = item
                if event["kind"] == "commit" and event["delta"]:
                    yield _sse(chunk(i, event["delta"]))
                elif event["kind"] == "draft":
                    yield _sse(chunk(i, "", draft=event["text"], canvas=event["canvas"], **{"pass": event["pass"]}))
            if task.exception() is not None:
                raise task.exception()
            for i, row in enumerate(rows):
                if row.error is not None:
                    yield _sse(APIError(500, f"generation failed: {row.error}", type_="server_error").body())
                    continue
                yield _sse(chunk(i, "", row.finish, redraft=row.stats()))
            if req.stream_options is not None and req.stream_options.include_usage:
                yield _sse({**head, "object": obj, "choices": [], "usage": rows_usage(rows)})
            yield _sse("[DONE]")
        finally:
            if not task.done():  # the client went away: stop generating for it at the next canvas
                for row in rows:
                    row.cancelled = True


# --------------------------------------------------------------------------------------------- starting
