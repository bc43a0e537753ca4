"""Fixtures of the job tests: the project database on SQLite or on the real PostgreSQL, a broker
(embedded SQLite or the real Redis), and a real ``ftf worker`` subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/13"  # a database of its own, emptied before each test


def reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The state database: SQLite in FTF_HOME, or the real PostgreSQL (shared: tests only read
    the jobs they create)."""
    if request.param == "postgres":
        if not reachable(5432):
            pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
        monkeypatch.setenv("FTF_DATABASE_URL", POSTGRES)
    return str(request.param)


@pytest.fixture(params=["embedded", "redis"])
def broker(request: pytest.FixtureRequest, ftf_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A broker URL, also in FTF_BROKER_URL: the embedded SQLite one, or the real Redis, emptied."""
    if request.param == "redis":
        if not reachable(6379):
            pytest.skip("Redis is not reachable at 127.0.0.1:6379")
        import redis

        redis.Redis.from_url(REDIS).flushdb()
        url = REDIS
    else:
        ftf_home.mkdir(parents=True, exist_ok=True)
        url = f"sqla+sqlite:///{ftf_home / 'broker.db'}"
    monkeypatch.setenv("FTF_BROKER_URL", url)
    return url


@pytest.fixture
def worker(broker: str, ftf_home: Path, tmp_path: Path) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Starts ``ftf worker -Q <queue>`` (niced, short heartbeats) in a subprocess; stops it after."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(queue: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(SRC), "FTF_BROKER_URL": broker, "FTF_HOME": str(ftf_home)}
        cmd = ["nice", "-n", "5", sys.executable, "-m", "finetuneflow.cli", "worker", "-Q", queue,
               "--heartbeat", "1", "--stale-after", "5", "--concurrency", "1",
               "--loglevel", "WARNING"]  # fmt: skip
        log = open(tmp_path / f"worker-{len(procs)}.log", "wb")  # noqa: SIM115 - closed with the process
        # a session of its own: a test can kill the whole worker (its pool too) with killpg
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )
        return procs[-1]

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
