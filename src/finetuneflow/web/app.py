"""``create_app``: the REST API under ``/api`` (OpenAPI at ``/api/openapi.json``, docs at
``/api/docs``) with its guards. Nothing is mounted at ``/``: the studio's pages (``ftf ui``) extend
this same app with ``include_router`` and ``mount``."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from finetuneflow.errors import ConfigError
from finetuneflow.serve.config import is_loopback
from finetuneflow.web import errors
from finetuneflow.web.config import WebConfig
from finetuneflow.web.guards import BodyLimit, NulGuard, RateLimit, SiteGuard, TokenGuard
from finetuneflow.web.routes import datasets, jobs, memory, projects, runs

UPLOAD_PATHS = re.compile(r"/api/projects/[^/]+/files")  # uploads enforce max_upload_mb themselves


def api_token(cfg: WebConfig) -> str | None:
    """The token clients must send (from ``$cfg.token_env``), or None on loopback without one.

    Raises:
        ConfigError: the host is not loopback and no token is set (the same rule as ``ftf serve``).
    """
    token = os.environ.get(cfg.token_env, "").strip() or None
    if token is None and not is_loopback(cfg.host):
        raise ConfigError(
            [f"host: {cfg.host!r} is reachable from other machines; set an API token in ${cfg.token_env} "
             "(clients send it as a Bearer token), or listen on 127.0.0.1"],
            "web settings",
        )  # fmt: skip
    return token


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The document FastAPI builds, less its default 422 answers: a validation error is a 400 in
    our one error shape (``web/errors.py``), which every operation documents."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            for operation in (op for path in doc["paths"].values() for op in path.values()):
                operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                doc.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = doc
        return app.openapi_schema

    return build


def create_app(cfg: WebConfig | None = None) -> FastAPI:
    """The REST API app for ``cfg`` (checked first).

    Raises:
        ConfigError: invalid settings, or a non-loopback host without a token.
    """
    cfg = cfg or WebConfig()
    if problems := cfg.problems():
        raise ConfigError(problems, "web settings")
    token = api_token(cfg)
    app = FastAPI(
        title="FineTuneFlow",
        summary="Projects, files, datasets, review, training, evaluation, export, memory and jobs.",
        version="1",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.state.web_config = cfg
    app.state.api_token = token  # the studio's login page compares with it (web/ui/login.py)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    errors.install(app)
    for module in (projects, datasets, runs, memory, jobs):
        app.include_router(module.router)
    # the last added runs first: where it comes from, the token, the rate of writes, the body size
    app.add_middleware(NulGuard)
    app.add_middleware(BodyLimit, limit=cfg.max_request_bytes, exempt=UPLOAD_PATHS)
    app.add_middleware(RateLimit, per_minute=cfg.rate_per_minute, burst=cfg.rate_burst)
    app.add_middleware(TokenGuard, token=token)
    app.add_middleware(SiteGuard, token=token, host=cfg.host, token_env=cfg.token_env, trusted=cfg.origins())
    return app
