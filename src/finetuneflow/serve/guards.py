"""What every request passes before a route sees it: the Host it names, the body size limit and
the API key."""

from __future__ import annotations

import hmac
import json
import re
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from finetuneflow.serve.config import is_loopback
from finetuneflow.serve.errors import error_body

# a Host header: a name or IPv4 address, or an IPv6 address in brackets, and an optional port
_HOST = re.compile(r"(?P<name>\[[0-9a-fA-F:.]+\]|[^\s:@/?#\[\]]+)(?::\d{1,5})?")
FOREIGN_HOST = (
    "the Host header does not name this machine: without an API key this server answers only to "
    "127.0.0.1, localhost or [::1], so that no web page under another name can read it; set a key to "
    "serve other names"
)


class Guard:
    """ASGI middleware: a Bearer API key (when one is set) on every ``/v1`` path, compared in
    constant time and never logged; without a key, a Host that does not name this machine answered
    403 (:func:`local_host`); bodies over ``limit`` bytes answered 413, by their declared length at
    once or, for a chunked body, when the reading passes the limit."""

    def __init__(self, app: ASGIApp, limit: int, api_key: str | None, host: str = "127.0.0.1") -> None:
        self.app = app
        self.limit = limit
        self.key = api_key.encode() if api_key else None
        self.host = host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.key is None and not local_host(headers.get("host"), self.host):
            await _send_error(send, 403, error_body(FOREIGN_HOST, "permission_error", None, "foreign_host"))
            return
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


def local_host(header: str | None, configured: str) -> bool:
    """Whether a request's ``Host`` header names this machine: a loopback name or address (any port)
    or ``configured`` (the host the server listens on). A page whose own name was made to resolve to
    127.0.0.1 (DNS rebinding) still sends that name, so without a secret this is what keeps other
    sites out. No header at all passes: every browser sends one, and a client that does not could
    connect anyway."""
    if header is None:
        return True
    found = _HOST.fullmatch(header.strip())
    if found is None:
        return False
    name = found["name"].strip("[]").lower()
    return is_loopback(name) or _loopback_name(name) or name == configured.strip("[]").lower()


def _loopback_name(name: str) -> bool:
    """``localhost`` with a trailing dot or under it (``studio.localhost``): browsers resolve these
    to the loopback address themselves (RFC 6761), never through DNS, so no other site can own one."""
    bare = name.removesuffix(".")
    return bare == "localhost" or bare.endswith(".localhost")


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
