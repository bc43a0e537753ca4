"""Every error the server answers, in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from finetuneflow.api.memory_port import MemoryUnavailable
from finetuneflow.api.scheduler import ServerClosed
from finetuneflow.api.serving import UnknownModel
from finetuneflow.errors import ConfigError, RequestRejected, is_out_of_memory

log = logging.getLogger("finetuneflow.serve")

_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None, kind: str | None = None
) -> JSONResponse:
    kind = kind or _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return JSONResponse(error_body(message, kind, param, code), status_code=status)


def _validation(_: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, RequestValidationError)
    first = err.errors()[0]
    if first.get("type") == "json_invalid":
        return error_response(400, f"the body is not valid JSON: {first.get('msg', '')}", code="invalid_json")
    param = field_path(first.get("loc", ()))
    return error_response(400, f"{param or 'body'}: {first.get('msg', 'invalid')}", param, "invalid_value")


def field_path(loc: Sequence[str | int]) -> str | None:
    """A pydantic location as OpenAI names a field: ``("body", "messages", 0, "role")`` is
    ``messages[0].role``."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or None


def _rejected(_: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, RequestRejected)
    return error_response(400, str(err), err.param, err.code)


def _config(_: Request, err: Exception) -> JSONResponse:
    return error_response(400, str(err), code="invalid_value")


def _unknown(_: Request, err: Exception) -> JSONResponse:
    message = err.args[0] if err.args else str(err)
    return error_response(404, str(message), "model", "model_not_found")


def _no_memory(_: Request, err: Exception) -> JSONResponse:
    return error_response(400, str(err), "memory", "memory_unavailable")


def _http(_: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, HTTPException)
    codes = {413: "request_too_large", 404: "not_found", 405: "method_not_allowed"}
    return error_response(err.status_code, str(err.detail), code=codes.get(err.status_code))


def _internal(_: Request, err: Exception) -> JSONResponse:
    # the type only: an error's text may hold a path, a prompt or a key; the log has all of it
    log.exception("internal error", exc_info=err)
    return error_response(500, f"internal error ({type(err).__name__}); the server log has the details")


def _closing(_: Request, err: Exception) -> JSONResponse:
    return error_response(503, str(err), code="server_closing")


def generation_failed(err: BaseException) -> tuple[int, dict[str, Any]]:
    """(status, error body) for an answer whose generation raised in the scheduler's thread. As
    for any internal error the client gets the type, not the text (a model's error can quote the
    prompt or a path); the server's log gets the traceback. Two causes the client can act on are
    named: the server shutting down (503) and memory running out (a shorter prompt or a smaller
    ``max_tokens`` may fit)."""
    if isinstance(err, ServerClosed):
        return 503, error_body(str(err), "server_error", code="server_closing")
    log.error("generation failed", exc_info=err)
    if is_out_of_memory(err):
        message = ("generation ran out of memory; a shorter conversation or a smaller max_tokens may fit, "
                   "or fewer requests at once")  # fmt: skip
        return 503, error_body(message, "server_error", code="out_of_memory")
    message = f"generation failed ({type(err).__name__}); the server log has the details"
    return 500, error_body(message, "server_error")


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` in OpenAI's shape."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(RequestRejected, _rejected)
    app.add_exception_handler(ConfigError, _config)
    app.add_exception_handler(UnknownModel, _unknown)  # any other LookupError is an internal one
    app.add_exception_handler(MemoryUnavailable, _no_memory)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(ServerClosed, _closing)
    app.add_exception_handler(Exception, _internal)
