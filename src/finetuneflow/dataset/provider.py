"""An OpenAI-compatible chat client for dataset generation (Ollama, vLLM, llama.cpp, OpenAI, our own server).

One :class:`Provider` is shared by a pool of threads. Around each HTTP request it holds one of
``concurrency`` slots, so the server never sees more requests at once however many threads call
:meth:`Provider.chat`. Transient failures (timeouts, dropped connections, 429, 5xx) are retried with
exponential backoff and full jitter; a 429's ``Retry-After`` is honoured. After ``circuit_failures``
calls in a row fail even after their retries, the circuit opens and every further call fails at once
with the reason, instead of spinning against a dead server.

The API key never leaves the client: the config records only *where* the key comes from, the client
keeps it in a :class:`_Secret` whose repr is masked, and every error text is scrubbed of it.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from finetuneflow.dataset.presets import GENERIC_KEY_ENV, PRESETS, ProviderConfig
from finetuneflow.errors import CircuitOpen, ConfigError, ErrorKind, ProviderError

__all__ = ["CircuitOpen", "Completion", "Provider", "ProviderConfig", "ProviderError"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_RETRY_STATUS = {429, 500, 502, 503, 504}
_RETRY_KINDS = {"timeout", "rate_limit", "connection", "bad_response"}
_FORMATS = ("json_schema", "json_object", None)  # structured-output levels, best first
_FORMAT_WORDS = ("response_format", "response format", "json_schema", "json_object")


@dataclass
class Completion:
    """One chat answer. ``text`` may be '' (the caller validates); token counts are 0 when unreported."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    seconds: float  # wall time of the call, retries and backoff included
    attempts: int  # HTTP requests made (1 = first try succeeded)
    model: str
    request: dict[str, Any]  # the body that got this answer, for the audit log (never holds the key)


class _Secret:
    """An API key that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        return text.replace(self._value, "***") if self._value else text

    def __repr__(self) -> str:
        return "_Secret('***')" if self._value else "_Secret('')"

    __str__ = __repr__


def _load_key(cfg: ProviderConfig) -> tuple[_Secret, str]:
    """The API key and a description of where it came from ('' when there is none).

    Raises:
        ProviderError: (kind 'auth') the key file is missing, empty or readable by others, or the
            preset needs a key and none is set.
    """
    if cfg.api_key_file:
        path = Path(cfg.api_key_file).expanduser()
        if not path.is_file():
            raise ProviderError(f"api_key_file {str(path)!r}: no such file", "auth")
        mode = stat.S_IMODE(path.stat().st_mode)
        if os.name == "posix" and mode & 0o077:
            raise ProviderError(
                f"api_key_file {str(path)!r} is open to group or others (mode {mode:o}); "
                f"run `chmod 600 {path}` so only you can read the key",
                "auth",
            )
        key = path.read_text(encoding="utf-8").strip()
        if not key:
            raise ProviderError(f"api_key_file {str(path)!r} is empty", "auth")
        return _Secret(key), f"file {path}"
    for name in (cfg.api_key_env, GENERIC_KEY_ENV):
        if name and os.environ.get(name, "").strip():
            return _Secret(os.environ[name].strip()), f"environment variable {name}"
    if PRESETS.get(cfg.preset) and PRESETS[cfg.preset].api_key_env:
        raise ProviderError(f"preset {cfg.preset!r} needs an API key: {_key_help(cfg)}", "auth")
    return _Secret(""), ""


def _key_help(cfg: ProviderConfig) -> str:
    env = cfg.api_key_env or GENERIC_KEY_ENV
    return f"set the environment variable {env} (or {GENERIC_KEY_ENV}), or api_key_file to a file holding it"


def _retry_after(value: str | None) -> float | None:
    """Seconds asked by a Retry-After header: a number of seconds or an HTTP-date; None if absent/invalid."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())  # a date is wall-clock by definition


def _server_message(resp: httpx.Response) -> str:
    """The error text of an error response, in the shapes OpenAI, vLLM, Ollama and llama.cpp use."""
    try:
        data = resp.json()
    except ValueError:
        return resp.text.strip()[:500] or resp.reason_phrase
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:500]
        if isinstance(err, str):
            return err[:500]
        if data.get("detail"):
            return str(data["detail"])[:500]
    return json.dumps(data)[:500]


def _parse_chat(resp: httpx.Response) -> dict[str, Any]:
    data = resp.json()
    choice = data["choices"][0]
    content = choice["message"].get("content")
    if content is not None and not isinstance(content, str):
        raise TypeError("message.content is not a string")
    usage = data.get("usage") or {}
    return {
        "text": content or "",
        "finish_reason": choice.get("finish_reason"),
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or 0),
        "model": data.get("model"),
    }


def _parse_models(resp: httpx.Response) -> list[str]:
    return [str(m["id"]) for m in resp.json()["data"]]


class Provider:
    """A thread-safe OpenAI-compatible chat client with bounded concurrency, retries and a circuit breaker.

    Raises (constructor):
        ConfigError: ``cfg`` has problems.
        ProviderError: (kind 'auth') the API key cannot be loaded (see ``api_key_file``/``api_key_env``).
    """

    def __init__(
        self,
        cfg: ProviderConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        problems = cfg.problems()
        if problems:
            raise ConfigError(problems, "provider config")
        self.cfg = cfg.resolved()
        self._key, self.key_source = _load_key(self.cfg)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._max_tokens_key = PRESETS.get(self.cfg.preset, PRESETS["custom"]).max_tokens_key
        self._slots = threading.BoundedSemaphore(self.cfg.concurrency)
        self._lock = threading.Lock()
        self._in_flight = 0
        self._max_in_flight = 0
        self._format_level = 0  # index into _FORMATS; only ever goes down the list
        self._failures = 0  # calls failed in a row
        self._last_error: ProviderError | None = None
        n = self.cfg.concurrency
        self._client = httpx.Client(
            timeout=httpx.Timeout(self.cfg.timeout_s, connect=self.cfg.connect_timeout_s),
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
        )

    def __repr__(self) -> str:
        c = self.cfg
        return f"Provider(preset={c.preset!r}, base_url={c.base_url!r}, model={c.model!r}, key={self._key!r})"

    # -- public -------------------------------------------------------------------------------------

    @property
    def max_in_flight(self) -> int:
        """The most requests this Provider ever had in flight at once (never above ``concurrency``)."""
        return self._max_in_flight

    @property
    def structured_output(self) -> str | None:
        """The response_format type sent with a ``json_schema`` (lowered when the server refused one)."""
        return _FORMATS[self._format_level]

    def chat(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        json_schema: dict[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> Completion:
        """One chat completion; ``json_schema`` asks for structured output (downgraded when unsupported).

        Raises:
            CircuitOpen: earlier calls failed ``circuit_failures`` times in a row; nothing is sent.
            ProviderError: the call failed after its retries (see ``kind``).
        """
        self._check_circuit()
        start, attempts = time.monotonic(), 0
        try:
            while True:
                body = self._chat_body(messages, json_schema, temperature, max_tokens)
                try:
                    parsed, n = self._request("POST", "/chat/completions", body, _parse_chat)
                    attempts += n
                    break
                except ProviderError as err:
                    attempts += err.attempts
                    if not self._downgrade(err, body):
                        raise
        except ProviderError as err:
            self._record(err)
            raise
        self._record(None)
        return Completion(
            text=parsed["text"],
            finish_reason=parsed["finish_reason"],
            prompt_tokens=parsed["prompt_tokens"],
            completion_tokens=parsed["completion_tokens"],
            seconds=time.monotonic() - start,
            attempts=attempts,
            model=str(parsed["model"] or self.cfg.model),
            request=body,
        )

    def list_models(self) -> list[str]:
        """Model names the server serves (GET /models).

        Raises:
            ProviderError: the server could not be reached or answered an error.
        """
        return self._request("GET", "/models", None, _parse_models)[0]

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Provider:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- one call: body, retries, one attempt ---------------------------------------------------------

    def _chat_body(
        self,
        messages: Sequence[dict[str, Any]],
        json_schema: dict[str, Any] | None,
        temperature: float | None,
        max_tokens: int | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": list(messages),
            "temperature": self.cfg.temperature if temperature is None else temperature,
            self._max_tokens_key: max_tokens or self.cfg.max_tokens,
            "stream": False,
        }
        kind = _FORMATS[self._format_level] if json_schema is not None else None
        if kind == "json_schema":
            name = str((json_schema or {}).get("title") or "answer")
            name = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64]
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": json_schema, "strict": False},
            }
        elif kind == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    def _downgrade(self, err: ProviderError, body: dict[str, Any]) -> bool:
        """After a 400 about response_format: remember to send a weaker one from now on; True = try again."""
        sent = body.get("response_format", {}).get("type")
        text = err.message.lower()
        if err.kind != "bad_request" or sent is None or not any(w in text for w in _FORMAT_WORDS):
            return False
        with self._lock:
            self._format_level = max(self._format_level, _FORMATS.index(sent) + 1)
        log.warning("server refused response_format %r; sending %r from now on", sent, self.structured_output)
        return True

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None, parse: Callable[[httpx.Response], T]
    ) -> tuple[T, int]:
        """``parse`` of a successful response and the number of attempts it took; retries transient errors.

        Raises:
            ProviderError: a non-retryable error, or the last error once retries are used up.
        """
        tries = 1 + self.cfg.max_retries
        bad_responses = 0
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._attempt(method, path, body, parse), attempt
            except ProviderError as err:
                err.attempts = attempt
                bad_responses += err.kind == "bad_response"
                retryable = err.kind in _RETRY_KINDS or (err.kind == "server" and err.status in _RETRY_STATUS)
                if not retryable or attempt >= tries or bad_responses > 1:
                    raise
                wait = self._backoff(attempt, err.retry_after)
                log.info("%s %s: %s; retry %d/%d in %.2fs", method, path, err, attempt, tries - 1, wait)
                self._sleep(wait)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before retry ``attempt``: the server's Retry-After, else full jitter over 2^n backoff."""
        if retry_after is not None:
            return min(retry_after, self.cfg.max_backoff_s)
        cap = min(self.cfg.max_backoff_s, self.cfg.backoff_s * 2 ** min(attempt - 1, 32))
        return self._rng.uniform(0, cap)

    def _attempt(
        self, method: str, path: str, body: dict[str, Any] | None, parse: Callable[[httpx.Response], T]
    ) -> T:
        url = self.cfg.base_url + path
        headers = {"Authorization": f"Bearer {self._key.reveal()}"} if self._key.reveal() else {}
        try:
            with self._slot():
                resp = self._client.request(method, url, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            connect = isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
            name, what = ("connect_timeout_s", "connection") if connect else ("timeout_s", "answer")
            raise self._error(
                f"{method} {url}: no {what} within {getattr(self.cfg, name):g}s (raise {name}, "
                "or lower concurrency / max_tokens)",
                "timeout",
            ) from exc
        except httpx.RequestError as exc:  # refused, reset, dropped mid-answer, bad TLS ...
            raise self._error(
                f"{method} {url}: connection failed ({type(exc).__name__}: {exc}); is the server running "
                f"and is base_url right?",
                "connection",
            ) from exc
        if resp.is_redirect:  # e.g. http:// -> https://; following would turn a POST into a GET
            raise self._error(
                f"{method} {url} was redirected to {resp.headers.get('Location')!r}; "
                "set base_url to the final address",
                "bad_request",
                resp.status_code,
            )
        if resp.status_code >= 400:
            raise self._status_error(resp, url)
        try:
            return parse(resp)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise self._error(
                f"{method} {url}: answer is not an OpenAI-shaped response ({type(exc).__name__}: {exc}); "
                f"body starts {resp.text[:200]!r}",
                "bad_response",
                resp.status_code,
            ) from exc

    def _status_error(self, resp: httpx.Response, url: str) -> ProviderError:
        code, detail = resp.status_code, _server_message(resp)
        head = f"{resp.request.method} {url} -> {code}: {detail}"
        if code in (401, 403):
            why = f"the key from {self.key_source} was refused" if self.key_source else "no API key was sent"
            err = self._error(f"{head}. Not authorised: {why}; {_key_help(self.cfg)}", "auth", code)
        elif code == 404:
            err = self._error(
                f"{head}. The model {self.cfg.model!r} or base_url {self.cfg.base_url!r} is "
                "wrong; `ftf provider test` lists the served models",
                "not_found",
                code,
            )
        elif code == 429:
            err = self._error(f"{head}. Rate limited: lower concurrency if this persists", "rate_limit", code)
        elif code >= 500:
            err = self._error(f"{head}. Server error", "server", code)
        else:
            err = self._error(f"{head}. The server refused the request", "bad_request", code)
        err.retry_after = _retry_after(resp.headers.get("Retry-After"))
        return err

    def _error(self, message: str, kind: ErrorKind, status: int | None = None) -> ProviderError:
        return ProviderError(self._key.redact(message), kind, status)

    @contextmanager
    def _slot(self) -> Iterator[None]:
        """Hold one of ``concurrency`` slots for the duration of one HTTP request."""
        with self._slots:
            with self._lock:
                self._in_flight += 1
                self._max_in_flight = max(self._max_in_flight, self._in_flight)
            try:
                yield
            finally:
                with self._lock:
                    self._in_flight -= 1

    # -- circuit breaker ------------------------------------------------------------------------------

    def _check_circuit(self) -> None:
        limit = self.cfg.circuit_failures
        with self._lock:
            failures, last = self._failures, self._last_error
        if limit and failures >= limit and last is not None:
            raise CircuitOpen(
                f"stopped calling {self.cfg.base_url}: the last {failures} calls failed even after retries. "
                f"Last error: {last.message}. Check that the server is up and serves model "
                f"{self.cfg.model!r} (`ftf provider test`), then start again.",
                last.kind,
                last.status,
            )

    def _record(self, err: ProviderError | None) -> None:
        with self._lock:
            self._failures = 0 if err is None else self._failures + 1
            self._last_error = err or self._last_error
