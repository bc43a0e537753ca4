"""The studio's login page (a browser off loopback cannot send the token header): the right token
sets the ``ftf_token`` cookie (HttpOnly, SameSite=Strict, Secure over https) and opens the pages;
a wrong one sets nothing; a page without the token redirects there, the API answers 401 JSON.
Over TestClient, and over real HTTP against ``ftf ui --host 0.0.0.0``, which says how to log in."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from finetuneflow.web import WebConfig
from finetuneflow.web.studio import create_studio_app

from .conftest import Studio, free_port, stop_studio, studio_env

TOKEN = "studio-token-5e1f"


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, ftf_home: Path) -> TestClient:
    monkeypatch.setenv("FTF_WEB_TOKEN", TOKEN)
    ftf_home.mkdir(parents=True, exist_ok=True)
    return TestClient(create_studio_app(WebConfig(host="0.0.0.0")), base_url="https://studio.test")


def test_a_page_without_the_token_redirects_to_the_login_page(client: TestClient) -> None:
    page = client.get("/ui/projects/demo/train?job=3", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/ui/login?next=%2Fui%2Fprojects%2Fdemo%2Ftrain%3Fjob%3D3"
    assert client.get("/", follow_redirects=False).headers["location"] == "/ui/login?next=%2F"
    form = client.get("/ui/login?next=/ui/projects/demo/train")
    assert form.status_code == 200 and 'name="token"' in form.text and "FTF_WEB_TOKEN" in form.text
    assert client.get("/static/studio.css").status_code == 200  # the login page's own assets
    api = client.get("/api/projects")  # the API keeps its JSON answer
    assert api.status_code == 401 and api.json()["error"]["code"] == "invalid_token"
    write = client.post("/ui/projects/demo/settings", json={"goal": "style"})
    assert write.status_code == 401 and "set-cookie" not in write.headers


def test_the_right_token_sets_a_strict_httponly_cookie(client: TestClient) -> None:
    answer = client.post(
        "/ui/login", data={"token": TOKEN, "next": "/ui/projects/demo/model"}, follow_redirects=False
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/projects/demo/model"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"ftf_token={TOKEN};")
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite", "path"} <= attributes and "samesite=strict" in cookie.lower()
    assert client.get("/", follow_redirects=False).status_code == 200  # the cookie opens the pages
    assert client.get("/api/projects").status_code == 200  # and the API, as EventSource needs


def test_a_wrong_token_sets_no_cookie(client: TestClient) -> None:
    for wrong in ("", "studio-token-5e1", TOKEN + "x", "x" * 4000):
        answer = client.post("/ui/login", data={"token": wrong, "next": "/"}, follow_redirects=False)
        assert answer.status_code in (401, 400) and "set-cookie" not in answer.headers, wrong
    assert "not the token of this studio" in client.post("/ui/login", data={"token": "nope"}).text
    assert not client.cookies and client.get("/", follow_redirects=False).status_code == 303


def test_login_never_redirects_off_the_server(client: TestClient) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        answer = client.post("/ui/login", data={"token": TOKEN, "next": target}, follow_redirects=False)
        assert answer.headers["location"] == "/", target


def test_over_http_the_cookie_is_not_secure(client: TestClient) -> None:
    plain = TestClient(client.app, base_url="http://studio.test")
    cookie = plain.post("/ui/login", data={"token": TOKEN}, follow_redirects=False).headers["set-cookie"]
    assert "secure" not in cookie.lower() and "httponly" in cookie.lower()


@contextmanager
def open_studio(home: Path, log: Path) -> Iterator[Studio]:
    """``ftf ui --host 0.0.0.0`` with a token (no worker), once it answers; stopped afterwards."""
    port = free_port()
    env = {**studio_env(home), "FTF_WEB_TOKEN": TOKEN}
    home.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "finetuneflow.cli", "ui", "--host", "0.0.0.0", "--port", str(port),
           "--no-worker", "--no-open"]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    studio = Studio(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                httpx.get(studio.url + "/static/studio.css", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            pytest.fail(f"ftf ui did not start\n{studio.tail()}")
        yield studio
    finally:
        stop_studio(studio)


def test_ftf_ui_on_all_interfaces_says_how_to_log_in(ftf_home: Path, tmp_path: Path) -> None:
    with open_studio(ftf_home, tmp_path / "studio.log") as studio:
        first = httpx.get(studio.url + "/", timeout=10)
        assert first.status_code == 303 and first.headers["location"].startswith("/ui/login")
        with httpx.Client(base_url=studio.url, follow_redirects=True) as browser:
            assert browser.post("/ui/login", data={"token": "wrong"}).status_code == 401
            assert not browser.cookies
            assert browser.post("/ui/login", data={"token": TOKEN}).status_code == 200  # followed to /
            assert browser.cookies.get("ftf_token") == TOKEN and browser.get("/").status_code == 200
        said = " ".join(studio.tail().split())
        assert "a token is needed" in said and "/ui/login" in said and "$FTF_WEB_TOKEN" in said
        assert TOKEN not in studio.tail()  # the token itself is never printed


def test_a_browser_logs_in_and_uses_the_studio(ftf_home: Path, tmp_path: Path, chromium: Any) -> None:
    """In chromium: redirected to the login page, a wrong token refused, the right one opens the
    page asked for, whose own API calls (fetch, with the cookie) work; no script sees the cookie."""
    with open_studio(ftf_home, tmp_path / "studio.log") as studio:
        context = chromium.new_context()
        page = context.new_page()
        page.goto(studio.url + "/")
        page.wait_for_url("**/ui/login?next=*")
        page.get_by_label("Studio token").fill("wrong")
        page.get_by_role("button", name="Log in").click()
        page.get_by_text("not the token of this studio").wait_for()
        assert not context.cookies()
        page.get_by_label("Studio token").fill(TOKEN)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(studio.url + "/")
        page.locator("html[data-ready]").wait_for(state="attached")
        page.get_by_label("New project name").fill("remote")
        page.get_by_label("New project name").press("Enter")  # a POST to /api with the cookie
        page.wait_for_url("**/ui/projects/remote/model")
        (cookie,) = context.cookies()
        assert cookie["name"] == "ftf_token" and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert "ftf_token" not in page.evaluate("document.cookie")
        context.close()
