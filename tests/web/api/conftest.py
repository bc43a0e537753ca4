"""Fixtures of the REST API tests: the app on SQLite or on the real PostgreSQL (a TestClient), a
fresh project name per test (PostgreSQL is shared between tests and runs), and the server as a
uvicorn subprocess on a free port (real HTTP; killed and started again by the restart tests)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from jobs.conftest import POSTGRES, broker, reachable, worker  # noqa: F401 - fixtures: a broker, a worker subprocess

from finetuneflow.serve.run import free_port
from finetuneflow.web import WebConfig, create_app

SRC = Path(__file__).resolve().parents[3] / "src"
# the studio without a token answers only to its own machine's names (SiteGuard); TestClient's
# default, http://testserver, is a foreign name to it
LOCAL_URL = "http://127.0.0.1:8770"


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The state database: SQLite in FTF_HOME, or the real PostgreSQL (skipped when unreachable)."""
    if request.param == "postgres":
        if not reachable(5432):
            pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
        monkeypatch.setenv("FTF_DATABASE_URL", POSTGRES)
    return str(request.param)


@pytest.fixture
def project() -> str:
    """A project name no other test (or earlier run on the shared PostgreSQL) has used."""
    return f"p-{secrets.token_hex(4)}"


@pytest.fixture
def client(database: str, ftf_home: Path) -> Iterator[TestClient]:
    """The API app with default settings, in process."""
    ftf_home.mkdir(parents=True, exist_ok=True)
    with TestClient(create_app(WebConfig()), base_url=LOCAL_URL) as c:
        yield c


def make_client(**settings: object) -> TestClient:
    """A client of an app with these WebConfig settings."""
    return TestClient(create_app(WebConfig(**settings)), base_url=LOCAL_URL)  # type: ignore[arg-type]


class Server:
    """``create_app`` served by uvicorn in a subprocess: ``start()``, ``kill()`` (SIGKILL) and
    ``start()`` again on the same port, as a real restart is."""

    def __init__(self, home: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.home, self.log = home, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(SRC), "FTF_HOME": str(self.home)}
        cmd = [sys.executable, "-m", "uvicorn", "finetuneflow.web.app:create_app", "--factory",
               "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/api/projects", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        pytest.fail(f"the server did not start\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=20)


@pytest.fixture
def server(database: str, ftf_home: Path, tmp_path: Path) -> Iterator[Server]:
    """A started server subprocess (killed after the test)."""
    ftf_home.mkdir(parents=True, exist_ok=True)
    srv = Server(ftf_home, tmp_path / "server.log")
    srv.start()
    yield srv
    srv.kill()
