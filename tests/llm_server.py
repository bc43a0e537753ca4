"""A scripted OpenAI-compatible HTTP server for tests and benchmarks.

Real HTTP on 127.0.0.1 (a free port), so clients are tested with their real transport:

    with ScriptedServer() as srv:
        srv.script(Reply.rate_limited(retry_after="2"), Reply.valid())
        ...  # point a client at srv.url ('http://127.0.0.1:PORT/v1')

Chat requests take scripted replies first-in first-out; once the script is empty, ``responder`` answers
from the request body. Every request is recorded (``srv.requests``) and the chat requests in flight are
counted (``srv.max_in_flight``). For benchmarks, ``latency_s`` and ``capacity`` make it behave like a
server with that many slots: requests beyond capacity are answered 429 (``srv.over_capacity``), and
``srv.utilization(wall_s)`` tells what share of the capacity was busy.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

QA = {"question": "What is the boiling point of water at sea level?", "answer": "100 degrees Celsius."}


@dataclass
class Reply:
    """How the server answers one chat request."""

    content: str = "ok"  # the message content; for status >= 400, the error message
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # sleep before answering (on top of the server's latency_s)
    drop: bool = False  # close the connection without any response
    raw_body: bytes | None = None  # sent verbatim instead of the JSON body
    finish_reason: str = "stop"

    @classmethod
    def valid(cls, content: str | dict[str, Any] | None = None) -> Reply:
        """A well-formed answer (a Q&A pair as JSON by default)."""
        if isinstance(content, str):
            return cls(content)
        return cls(json.dumps(QA if content is None else content))

    @classmethod
    def fenced(cls, obj: dict[str, Any] | None = None) -> Reply:
        """Valid JSON wrapped in a ```json fence, as chatty models do."""
        return cls("Here you go:\n```json\n" + json.dumps(obj or QA, indent=2) + "\n```")

    @classmethod
    def truncated(cls) -> Reply:
        """JSON cut off by the token limit (finish_reason 'length')."""
        text = json.dumps(QA)
        return cls(text[: len(text) // 2], finish_reason="length")

    @classmethod
    def malformed(cls) -> Reply:
        """Text that looks like JSON but does not parse."""
        return cls('{"question": "What is 2+2?", answer: 4,}')

    @classmethod
    def empty(cls) -> Reply:
        return cls("")

    @classmethod
    def rate_limited(cls, retry_after: str | None = "1") -> Reply:
        """429 Too Many Requests, with ``Retry-After`` (seconds or an HTTP-date) unless None."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return cls("Rate limit reached, slow down", status=429, headers=headers)

    @classmethod
    def server_error(cls, status: int = 500, message: str = "internal server error") -> Reply:
        return cls(message, status=status)

    @classmethod
    def error(cls, status: int, message: str) -> Reply:
        """An OpenAI-shaped error body: {"error": {"message": ..., "type": ..., "code": ...}}."""
        return cls(message, status=status)

    @classmethod
    def slow(cls, delay_s: float, content: str | None = None) -> Reply:
        """A valid answer that arrives after ``delay_s`` (beyond the client's timeout, typically)."""
        reply = cls.valid(content)
        reply.delay_s = delay_s
        return reply

    @classmethod
    def dropped(cls) -> Reply:
        """The connection is closed without a response."""
        return cls(drop=True)

    @classmethod
    def bad_shape(cls) -> Reply:
        """A 200 whose JSON is not a chat completion."""
        return cls(raw_body=b'{"unexpected": true}')


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON, or None
    at: float  # time.monotonic() on arrival


def echo(body: dict[str, Any]) -> Reply:
    """Default responder: JSON when JSON was asked for (response_format), else echo the last message."""
    messages = body.get("messages") or [{}]
    last = str(messages[-1].get("content", ""))
    if body.get("response_format"):
        return Reply.valid({"echo": last})
    return Reply(f"echo: {last}")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # the owner joins handler threads itself, with a time limit
    owner: ScriptedServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real servers and httpx's pool expect
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; with Nagle's algorithm on, the client's delayed
        # ACK then stalls every answer ~40 ms. Real servers (uvicorn, Go's net/http) set this too.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.owner._track(self.connection, threading.current_thread())

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.owner._untrack(self.connection)

    def do_GET(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
        owner = self.server.owner
        owner._record(self, None)
        if self.path.rstrip("/") == "/v1/models":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "scripted"} for m in owner.models]
            self.send(200, json.dumps({"object": "list", "data": data}).encode())
        else:
            self.send(404, _error_body(404, f"no route {self.path}"))

    def do_POST(self) -> None:  # noqa: N802
        owner = self.server.owner
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        owner._record(self, body)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self.send(404, _error_body(404, f"no route {self.path}"))
        elif not isinstance(body, dict):
            self.send(400, _error_body(400, "body is not a JSON object"))
        else:
            owner._serve_chat(self, body)

    def send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:  # the client gave up (timed out) before we answered
            self.close_connection = True


def _error_body(status: int, message: str) -> bytes:
    kind = "rate_limit_exceeded" if status == 429 else "server_error" if status >= 500 else "invalid_request"
    return json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()


def _n_words(text: Any) -> int:
    return len(str(text or "").split())


class ScriptedServer:
    """An OpenAI-compatible server answering from a script; see the module docstring."""

    def __init__(
        self,
        responder: Callable[[dict[str, Any]], Reply] = echo,
        *,
        models: tuple[str, ...] = ("test-model",),
        latency_s: float = 0.0,
        capacity: int = 0,
    ) -> None:
        self.responder = responder
        self.models = models
        self.latency_s = latency_s
        self.capacity = capacity  # 0 = unlimited
        self.requests: list[Recorded] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.reset_stats()

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> ScriptedServer:
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="scripted-llm", daemon=True
        )  # a short poll interval: close() waits for one poll
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving: wake sleeping handlers, close every connection, join the threads."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        with self._lock:
            conns = dict(self._conns)
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        for thread in [*conns.values(), self._thread]:
            if thread is not None:
                thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The API root, as a client's base_url."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting and statistics --------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next chat requests, in order."""
        with self._lock:
            self._script.extend(replies)

    @property
    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.rstrip("/") == "/v1/chat/completions"]

    def reset_stats(self) -> None:
        """Zero the counters (not the recorded requests): in flight, over capacity, busy time."""
        with self._lock:
            self.in_flight = 0
            self.max_in_flight = 0
            self.over_capacity = 0
            self.served = 0
            self._serving: dict[int, float] = {}  # request number -> start time, of those being served
            self._busy = 0.0
            self._numbers = 0

    def busy_seconds(self) -> float:
        """Summed service time of requests served so far, including the part of those still running."""
        now = time.monotonic()
        with self._lock:
            return self._busy + sum(now - start for start in self._serving.values())

    def utilization(self, wall_s: float, busy_before: float = 0.0) -> float:
        """Share of capacity used over a window: (busy_seconds() - busy_before) / (capacity * wall_s)."""
        slots = self.capacity or max(1, self.max_in_flight)
        return (self.busy_seconds() - busy_before) / (slots * wall_s) if wall_s > 0 else 0.0

    # -- handler side --------------------------------------------------------------------------------

    def _track(self, sock: socket.socket, thread: threading.Thread) -> None:
        with self._lock:
            self._conns[sock] = thread

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._conns.pop(sock, None)

    def _record(self, handler: _Handler, body: Any) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._lock:
            self.requests.append(Recorded(handler.command, handler.path, headers, body, time.monotonic()))

    def _serve_chat(self, handler: _Handler, body: dict[str, Any]) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            full = bool(self.capacity) and len(self._serving) >= self.capacity
            if full:
                self.over_capacity += 1
                self.in_flight -= 1
            else:
                self._numbers += 1
                number = self._numbers
                self._serving[number] = time.monotonic()
                reply = self._script.popleft() if self._script else None
        if full:
            handler.send(429, _error_body(429, "server at capacity"), {"Retry-After": "0"})
            return
        try:
            reply = reply or self.responder(body)
            self._stopping.wait(self.latency_s + reply.delay_s)
        finally:
            # counted out *before* answering: once the client has its answer it may send the next
            # request, which must not find this one still counted
            with self._lock:
                self._busy += time.monotonic() - self._serving.pop(number)
                self.served += 1
                self.in_flight -= 1
        self._answer(handler, body, reply)

    def _answer(self, handler: _Handler, body: dict[str, Any], reply: Reply) -> None:
        if reply.drop:
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return
        if reply.raw_body is not None:
            payload = reply.raw_body
        elif reply.status >= 400:
            payload = _error_body(reply.status, reply.content or HTTPStatus(reply.status).phrase)
        else:
            messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
            prompt = sum(_n_words(m.get("content")) for m in messages)
            payload = json.dumps(
                {
                    "id": f"chatcmpl-{len(self.requests)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model") or self.models[0],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply.content},
                            "finish_reason": reply.finish_reason,
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt,
                        "completion_tokens": _n_words(reply.content),
                        "total_tokens": prompt + _n_words(reply.content),
                    },
                }
            ).encode()
        handler.send(reply.status, payload, reply.headers)
