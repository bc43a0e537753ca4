"""What every request passes before a route sees it: the body size limit and the API key."""

from __future__ import annotations

import hmac
import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from finetuneflow.serve.errors import error_body


class Guard:
    """ASGI middleware: a Bearer API key (when one is set) on every ``/v1`` path, compared in
    constant time and never logged; bodies over ``limit`` bytes answered 413, by their declared
    length at once or, for a chunked body, when the reading passes the limit."""

    def __init__(self, app: ASGIApp, limit: int, api_key: str | None) -> None:
        self.app = app
        self.limit = limit
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.key is not None and scope["path"].startswith("/v1") and not self._authorized(headers):
            message = "a valid API key is required: send it as 'Authorization: Bearer <key>'"
            await _send_error(send, 401, error_body(message, "authentication_error", None, "invalid_api_key"))
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            body = error_body(self._too_large(), "invalid_request_error", None, "request_too_large")
            await _send_error(send, 413, body)
            return
        await self.app(scope, self._counting(receive), send)

    def _authorized(self, headers: dict[str, str]) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        assert self.key is not None
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.key)

    def _too_large(self) -> str:
        return f"the request body is over this server's limit of {self.limit} bytes"

    def _counting(self, receive: Receive) -> Receive:
        return limited_receive(receive, self.limit, self._too_large())


def limited_receive(receive: Receive, limit: int, message: str) -> Receive:
    """``receive`` that counts the body it reads and raises HTTP 413 with ``message`` past
    ``limit`` bytes (a chunked body declares no length): the app's error handlers answer it."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        event = await receive()
        seen += len(event.get("body", b""))
        if seen > limit:
            raise HTTPException(413, message)
        return event

    return counted


async def _send_error(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
