"""What every request passes before a route sees it: where it comes from (its Host and, for a
write, its Origin), the API token, the body size limit, the rate limit on writes and an address
without NUL characters. Plain ASGI middleware, so streamed bodies and event streams pass untouched."""

from __future__ import annotations

import hmac
import json
import math
import re
import threading
import time
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlencode

from starlette.types import ASGIApp, Receive, Scope, Send

from finetuneflow.serve.guards import limited_receive, local_host
from finetuneflow.web.config import normal_origin
from finetuneflow.web.errors import error_body

TOKEN_COOKIE = "ftf_token"  # a browser's EventSource cannot send headers; it sends cookies
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOGIN_PATH = "/ui/login"  # the studio's page that sets the cookie (web/ui/login.py)
PUBLIC = re.compile(r"/static/.*|" + re.escape(LOGIN_PATH))  # no secrets there; the login page needs them


class SiteGuard:
    """Requests from other web pages are refused (403). A write (POST/PUT/PATCH/DELETE) must not come
    from another site: its ``Origin``, when sent, must be this server's own, and its
    ``Sec-Fetch-Site`` must not be ``cross-site`` (a page elsewhere can post a form or a multipart
    upload to 127.0.0.1 without asking first: CSRF). Without a token, the ``Host`` must name this
    machine too (:func:`~finetuneflow.serve.guards.local_host`): a page whose own name was made to
    resolve to 127.0.0.1 (DNS rebinding) could otherwise read the whole API. Clients that send no
    ``Origin`` (curl, scripts, the openai client) are not browsers on another site and pass.
    ``trusted`` origins (the setting ``trusted_origins``: the address people open when a reverse
    proxy in front rewrites the Host header) may write, and their hosts are answered without a token."""

    def __init__(
        self,
        app: ASGIApp,
        token: str | None,
        host: str,
        token_env: str,
        trusted: frozenset[str] = frozenset(),
    ) -> None:
        self.app, self.open, self.host, self.token_env = app, token is None, host, token_env
        self.trusted = trusted  # WebConfig.trusted_origins, as browsers write them
        self.trusted_hosts = frozenset(o.partition("://")[2] for o in trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if self.open and not self._known_host(headers.get("host")):
            message = (
                "the Host header does not name this machine: without a token the studio answers only to "
                "127.0.0.1, localhost, [::1] and the hosts of trusted_origins; set a token in "
                f"${self.token_env} to serve other names"
            )
            await send_error(send, 403, message, "foreign_host")
        elif scope["method"] in WRITES and self._cross_site(headers):
            message = (
                "a write from another site is refused: only the studio's own pages may change its state "
                "(behind a reverse proxy that rewrites the Host header, add the address people open to "
                "the setting trusted_origins)"
            )
            await send_error(send, 403, message, "cross_site_request")
        else:
            await self.app(scope, receive, send)

    def _known_host(self, host: str | None) -> bool:
        return local_host(host, self.host) or (host or "").strip().lower() in self.trusted_hosts

    def _cross_site(self, headers: dict[str, str]) -> bool:
        """Whether a browser says the request comes from a page of another origin than this
        server's own or a trusted one."""
        origin = headers.get("origin")
        if origin is not None and normal_origin(origin) in self.trusted:
            return False
        if headers.get("sec-fetch-site") == "cross-site":
            return True
        if origin is None:
            return False
        # a browser writes an origin as scheme://host[:port], the port left out where it is the
        # default, as it does in the Host header: the same server has the same host[:port] in both
        # ("null", a sandboxed page's or a file's, holds none and so never matches)
        _, _, netloc = origin.partition("://")
        return netloc.lower() != headers.get("host", "").lower()


class TokenGuard:
    """Every HTTP request must carry the token (``Authorization: Bearer <token>`` or the
    ``ftf_token`` cookie), compared in constant time and never logged. Without a token: open.
    Without it, a page a browser asks for is redirected to the login page; anything else (the
    API, a page's own writes) is answered 401 in the API's error shape."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.token is None or PUBLIC.fullmatch(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self._authorized(_headers(scope)):
            await self.app(scope, receive, send)
        elif scope["method"] in ("GET", "HEAD") and not scope["path"].startswith("/api/"):
            await _redirect(send, f"{LOGIN_PATH}?{urlencode({'next': _target(scope)})}")
        else:
            message = (
                f"an API token is required: send 'Authorization: Bearer <token>' or the {TOKEN_COOKIE} cookie"
            )
            await send_error(send, 401, message, "invalid_token", {"www-authenticate": "Bearer"})

    def _authorized(self, headers: dict[str, str]) -> bool:
        assert self.token is not None
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token):
            return True
        cookie = SimpleCookie(headers.get("cookie", "")).get(TOKEN_COOKIE)
        return cookie is not None and hmac.compare_digest(cookie.value.encode(), self.token)


class NulGuard:
    """A NUL character in the address (path or query, raw or as ``%00``) is answered 400: no name
    or filter of ours holds one, and PostgreSQL cannot even compare a text with one (SQLite can,
    so without this the same request would answer differently by backend)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        address = scope.get("raw_path", b"") + b"?" + scope.get("query_string", b"")
        if scope["type"] == "http" and (b"\x00" in address or b"%00" in address or "\x00" in scope["path"]):
            await send_error(send, 400, "the address holds a NUL character (%00); remove it", "nul_character")
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """Bodies over ``limit`` bytes answered 413: by their declared length at once, or while a
    chunked one is read. Paths matching ``exempt`` (uploads) enforce their own limit."""

    def __init__(self, app: ASGIApp, limit: int, exempt: re.Pattern[str]) -> None:
        self.app, self.limit, self.exempt = app, limit, exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt.fullmatch(scope["path"]):
            await self.app(scope, receive, send)
            return
        declared = _headers(scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await send_error(send, 413, self._message(), "request_too_large")
            return
        await self.app(scope, self._counting(receive), send)

    def _message(self) -> str:
        return f"the request body is over the limit of {self.limit} bytes (setting max_request_bytes)"

    def _counting(self, receive: Receive) -> Receive:
        # an HTTPException: FastAPI turns any other error while reading a body into a 400
        return limited_receive(receive, self.limit, self._message())


class RateLimit:
    """A token bucket per client address for write requests: ``burst`` at once, refilled at
    ``per_minute``; an empty bucket answers 429 with Retry-After. Our own ~20 lines rather than
    slowapi: it needs no decorator on every route (web-ui's included), and one process holds the
    buckets, which is what a local studio is (a team server behind a proxy would limit there)."""

    def __init__(self, app: ASGIApp, per_minute: float, burst: int) -> None:
        self.app, self.rate, self.burst = app, per_minute / 60.0, float(burst)
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, monotonic time)
        self.lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in WRITES:
            wait = self._take((scope.get("client") or ("?", 0))[0])
            if wait > 0:
                message = (
                    f"too many write requests: the limit is {self.rate * 60:g} a minute with bursts of "
                    f"{self.burst:g} (settings rate_per_minute, rate_burst); retry in {wait} s"
                )
                await send_error(send, 429, message, "rate_limited", {"retry-after": str(wait)})
                return
        await self.app(scope, receive, send)

    def _take(self, client: str) -> int:
        """Take a token for ``client``; 0 when there was one, else whole seconds until there is."""
        now = time.monotonic()
        with self.lock:
            tokens, then = self.buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if tokens >= 1:
                self.buckets[client] = (tokens - 1, now)
                return 0
            self.buckets[client] = (tokens, now)
            return max(1, math.ceil((1 - tokens) / self.rate))


def same_token(given: str, token: str) -> bool:
    """``given`` is ``token``, compared in constant time (no timing tells how much of it matched)."""
    return hmac.compare_digest(given.encode(), token.encode())


def _target(scope: Scope) -> str:
    query = scope.get("query_string", b"").decode("latin-1")
    return scope["path"] + (f"?{query}" if query else "")


async def _redirect(send: Send, location: str) -> None:
    headers = [(b"location", location.encode("latin-1")), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def send_error(
    send: Send, status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> None:
    data = json.dumps(error_body(status, message, code)).encode()
    raw: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})
