"""The studio's login page: a browser off loopback cannot add the ``Authorization`` header to its
page loads or its EventSource, so it trades the API token typed here for the ``ftf_token`` cookie
(HttpOnly: no script reads it; SameSite=Strict: no other site's page sends it; Secure over https).
``TokenGuard`` (web/guards.py) redirects a page request without the token here."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from finetuneflow.web.guards import LOGIN_PATH, TOKEN_COOKIE, same_token
from finetuneflow.web.ui.pages import TEMPLATES

router = APIRouter(include_in_schema=False)


def safe_next(target: str | None) -> str:
    """Where to go after a login: a path on this server only (``//host`` or ``https://…`` would
    make the login page an open redirect), else the dashboard."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


@router.get(LOGIN_PATH, response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> Response:  # noqa: A002 - the query parameter's name
    return _page(request, next, error=None, status=200)


@router.post(LOGIN_PATH)
def login(request: Request, token: str = Form(""), next: str = Form("/")) -> Response:  # noqa: A002
    """The token is right: the cookie, and on to ``next``. Wrong: the form again (401), no cookie."""
    expected: str | None = request.app.state.api_token
    if expected is None:
        return RedirectResponse(safe_next(next), status_code=303)
    if not same_token(token.strip(), expected):
        return _page(request, next, error="That is not the token of this studio.", status=401)
    answer = RedirectResponse(safe_next(next), status_code=303)
    secure = request.url.scheme == "https"  # behind an https proxy, uvicorn's --proxy-headers tells
    answer.set_cookie(TOKEN_COOKIE, expected, httponly=True, samesite="strict", secure=secure, path="/")
    return answer


def _page(request: Request, target: str, error: str | None, status: int) -> Response:
    context: dict[str, Any] = {
        "next": safe_next(target),
        "error": error,
        "needed": request.app.state.api_token is not None,
        "token_env": request.app.state.web_config.token_env,
    }
    return TEMPLATES.TemplateResponse(request, "login.html", context, status_code=status)
