"""The routes: ``GET /v1/models`` (and ``/v1/models/{id}``), ``POST /v1/chat/completions`` (whole or
streamed as server-sent events) and ``POST /v1/embeddings``. Each parses the body, calls
:class:`ModelServer` and answers in OpenAI's shape; generation runs on the server's scheduler thread,
never on the event loop, and stops when its client goes away."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from finetuneflow.api.scheduler import Answer, Job
from finetuneflow.api.serving import ChatRequest, ModelServer
from finetuneflow.serve import errors
from finetuneflow.serve.guards import Guard
from finetuneflow.serve.schemas import ChatBody, EmbeddingBody


class _Done:
    """The end of an answer, as queued for the route."""

    def __init__(self, result: Answer | BaseException) -> None:
        self.result = result


async def _start(server: ModelServer, request: ChatRequest) -> tuple[Job, asyncio.Queue[str | _Done]]:
    """Queue ``request``; its pieces and end arrive on the returned queue (from the scheduler thread)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | _Done] = asyncio.Queue()

    def on_text(piece: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, piece)

    def on_done(result: Answer | BaseException) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, _Done(result))

    # checking and tokenizing the prompt (and recalling memories) is blocking work: off the loop
    job = await run_in_threadpool(server.start, request, on_text, on_done)
    return job, queue


class _Stream(StreamingResponse):
    """A streamed answer that stops its generation however the response ends: Starlette can
    cancel a stream whose client left before its generator ever ran, and then the generator's
    own ``finally`` does not run either."""

    def __init__(self, server: ModelServer, job: Job, content: AsyncIterator[str]) -> None:
        super().__init__(content, media_type="text/event-stream")
        self.server, self.job = server, job

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.server.cancel(self.job)  # a no-op once finished


async def _whole(queue: asyncio.Queue[str | _Done]) -> _Done:
    """The end of an answer (its pieces are in the end's result as well)."""
    while not isinstance(item := await queue.get(), _Done):
        pass
    return item


async def _disconnected(request: Request) -> None:
    """Return once the client has gone. The body is read by now, so the next ASGI message is the
    disconnect (the server sends it when the connection closes)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_gone(request: Request, queue: asyncio.Queue[str | _Done]) -> _Done | None:
    """The end of a whole answer, or None if its client went away first: a client that gave up
    (a timeout, Ctrl-C) must not keep a row of the batch busy until its answer is complete."""
    answer = asyncio.ensure_future(_whole(queue))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        answer.cancel()
        gone.cancel()
    return answer.result() if answer.done() and not answer.cancelled() else None


def _card(model: dict[str, Any]) -> dict[str, Any]:
    return {"id": model["id"], "object": "model", "created": model["created"], "owned_by": "finetuneflow"}


def _usage(answer: Answer) -> dict[str, int]:
    total = answer.prompt_tokens + answer.completion_tokens
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": total,
    }


def _chunk(ident: str, created: int, model: str, delta: dict[str, Any], finish: str | None) -> str:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    body = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [choice],
    }
    return f"data: {json.dumps(body)}\n\n"


async def _events(
    server: ModelServer, body: ChatBody, job: Job, queue: asyncio.Queue[str | _Done]
) -> AsyncIterator[str]:
    """The answer as server-sent events: a role chunk, content chunks, the finish chunk, [DONE]."""
    ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    try:
        yield _chunk(ident, created, body.model, {"role": "assistant", "content": ""}, None)
        while not isinstance(item := await queue.get(), _Done):
            yield _chunk(ident, created, body.model, {"content": item}, None)
        if isinstance(item.result, BaseException):  # the stream has begun: its status stays 200
            yield f"data: {json.dumps(errors.generation_failed(item.result)[1])}\n\n"
            return
        yield _chunk(ident, created, body.model, {}, item.result.finish_reason)
        if body.stream_options and body.stream_options.include_usage:
            usage = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": body.model}
            yield f"data: {json.dumps(usage | {'choices': [], 'usage': _usage(item.result)})}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        server.cancel(job)  # a no-op once finished; stops the generation of a client that left


def _encoded(vector: list[float], body: EmbeddingBody) -> list[float] | str:
    """A vector as asked: floats, or base64 of little-endian float32 (the openai client's default)."""
    if body.encoding_format == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def create_app(
    server: ModelServer, max_request_bytes: int, api_key: str | None = None, host: str = "127.0.0.1"
) -> FastAPI:
    """The HTTP app over ``server``; with ``api_key``, every /v1 call must send it as a Bearer token;
    without, only requests naming this machine (or ``host``, where it listens) as their Host pass."""
    app = FastAPI(title="FineTuneFlow", docs_url=None, redoc_url=None, openapi_url=None)
    errors.install(app)
    app.add_middleware(Guard, limit=max_request_bytes, api_key=api_key, host=host)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_card(m) for m in server.models()]}

    @app.get("/v1/models/{model:path}")
    async def model(model: str) -> dict[str, Any]:
        return _card(server.model(model))

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatBody, request: Request) -> Response:
        job, queue = await _start(server, body.to_request())
        if body.stream:
            return _Stream(server, job, _events(server, body, job, queue))
        try:
            item = await _unless_gone(request, queue)
        finally:
            server.cancel(job)  # a no-op once finished
        if item is None:
            return Response(status_code=499)  # nobody is left to read it (nginx's "client closed")
        if isinstance(item.result, BaseException):
            status, error = errors.generation_failed(item.result)
            return JSONResponse(error, status_code=status)
        answer = item.result
        message = {"role": "assistant", "content": answer.text}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": answer.finish_reason}
        out = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": [choice],
            "usage": _usage(answer),
        }
        if answer.sources:
            out["sources"] = answer.sources  # ours: the memories the prompt held
        return JSONResponse(out)

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingBody) -> dict[str, Any]:
        texts = body.texts()
        vectors = await run_in_threadpool(server.embed, body.model, texts, body.dimensions)
        data = [
            {"object": "embedding", "index": i, "embedding": _encoded(v, body)} for i, v in enumerate(vectors)
        ]
        tokens = sum(len(t.split()) for t in texts)  # words: the embedder's own tokens are not exposed
        return {
            "object": "list",
            "data": data,
            "model": body.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    return app
