"""Every error the REST API answers, in one shape: ``{"error": {"message", "type", "code"}}``.

FineTuneFlow's own errors map to 4xx by what they mean (a bad setting or input 400, an unknown
name 404, a file we cannot read 415, a finished run in the way or a run or project a job still
uses 409), a full disk to 507; anything else is a 500 whose message names the error type only,
so no internal detail (a path, a key) leaks into a response.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from finetuneflow.api.memory_port import MemoryUnavailable
from finetuneflow.errors import (
    ConfigError,
    FinishedRunError,
    ProjectInUse,
    ProviderError,
    QueueUnavailable,
    ReaderError,
    RequestRejected,
    RunInUse,
)

log = logging.getLogger("finetuneflow.web")

_TYPES = {
    400: "invalid_request", 401: "authentication_error", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_type",
    422: "invalid_request", 429: "rate_limited", 503: "unavailable", 507: "insufficient_storage",
}  # fmt: skip


class ApiError(Exception):
    """An error a route raises on purpose: its HTTP status, message and code (and headers)."""

    def __init__(self, status: int, message: str, code: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers


def error_body(status: int, message: str, code: str) -> dict[str, Any]:
    kind = _TYPES.get(status, "invalid_request" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "code": code}}


def error_response(
    status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, message, code), status_code=status, headers=headers)


def _validation(_: Request, err: Exception) -> JSONResponse:
    """The first problem's place and message; never the input value (it may be a pasted key)."""
    assert isinstance(err, RequestValidationError)
    first = err.errors()[0] if err.errors() else {}
    if first.get("type") == "json_invalid":
        return error_response(400, "the body is not valid JSON", "invalid_json")
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    return error_response(400, f"{where}: {first.get('msg', 'invalid')}", "invalid_value")


def _mapped(status: int, code: str) -> Any:
    def handle(_: Request, err: Exception) -> JSONResponse:
        # a KeyError's str() is its repr; an OSError's args[0] is its errno
        message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        return error_response(status, message, code)

    return handle


def _api(_: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, ApiError)
    return error_response(err.status, err.message, err.code, err.headers)


def _missing_file(_: Request, err: Exception) -> JSONResponse:
    # an OSError's text holds the whole path, inside the state folder: the file's name is enough
    assert isinstance(err, FileNotFoundError)
    name = Path(str(err.filename)).name if err.filename else ""
    return error_response(404, f"not found: {name}" if name else "not found", "not_found")


def _busy(_: Request, err: Exception) -> JSONResponse:
    # SQLite locked past its busy timeout, or the database unreachable: worth trying again soon.
    # The traceback goes to the log: an OperationalError can also be a schema problem, not a pause
    log.warning("the state database did not answer (%s)", type(err).__name__, exc_info=err)
    return error_response(503, "the state database is busy or unreachable; try again in a moment",
                          "database_unavailable", headers={"Retry-After": "2"})  # fmt: skip


def _os_error(request: Request, err: Exception) -> JSONResponse:
    # a full disk (or quota) is the machine's state, not our bug: say so, without the path
    assert isinstance(err, OSError)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        log.warning("out of disk space (%s)", type(err).__name__, exc_info=err)
        message = (
            "the disk where FineTuneFlow keeps its state is full; free some space "
            "(delete old runs or projects) and try again"
        )
        return error_response(507, message, "insufficient_storage")
    return _internal(request, err)


def _http(_: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
    return error_response(err.status_code, str(err.detail), codes.get(err.status_code, "http_error"))


def _provider(_: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, ProviderError)
    return error_response(
        502 if err.kind in ("server", "bad_response") else 400, err.message, f"provider_{err.kind}"
    )


def _internal(_: Request, err: Exception) -> JSONResponse:
    log.exception("internal error", exc_info=err)
    return error_response(
        500, f"internal error ({type(err).__name__}); the server log has the details", "internal"
    )


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` in the one shape (most specific class first)."""
    app.add_exception_handler(ApiError, _api)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(ConfigError, _mapped(400, "invalid_config"))
    app.add_exception_handler(RequestRejected, _mapped(400, "request_rejected"))
    app.add_exception_handler(ReaderError, _mapped(415, "unreadable_file"))
    app.add_exception_handler(FinishedRunError, _mapped(409, "run_finished"))
    app.add_exception_handler(RunInUse, _mapped(409, "run_in_use"))
    app.add_exception_handler(ProjectInUse, _mapped(409, "project_in_use"))
    app.add_exception_handler(MemoryUnavailable, _mapped(503, "memory_unavailable"))
    app.add_exception_handler(ProviderError, _provider)
    app.add_exception_handler(LookupError, _mapped(404, "not_found"))
    app.add_exception_handler(FileNotFoundError, _missing_file)
    app.add_exception_handler(OSError, _os_error)
    app.add_exception_handler(QueueUnavailable, _mapped(503, "queue_unavailable"))
    app.add_exception_handler(OperationalError, _busy)
    app.add_exception_handler(ValueError, _mapped(400, "invalid_value"))
    app.add_exception_handler(Exception, _internal)
