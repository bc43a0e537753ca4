"""Fixtures of the studio tests: ``ftf ui`` as a real subprocess (uvicorn and its embedded worker on
the embedded SQLite broker, state in the test's FTF_HOME) and a headless Debian chromium."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

SRC = Path(__file__).resolve().parents[3] / "src"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # screenshots, kept after the run (.gitignored)
CHROMIUM = os.environ.get("FTF_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Studio:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def studio_env(home: Path) -> dict[str, str]:
    """The environment of ``ftf ui`` and ``ftf worker``: the test's state folder, the embedded broker."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "FTF_HOME": str(home), "HF_HUB_OFFLINE": "1",
           "FTF_BROKER_URL": f"sqla+sqlite:///{home / 'broker.db'}"}  # fmt: skip
    env.pop("FTF_DATABASE_URL", None)
    return env


def start_studio(home: Path, log: Path, *args: str, port: int | None = None) -> Studio:
    """``ftf ui --no-open [args]`` on ``port`` (a free one by default), niced, in a session of its
    own; returns once it answers."""
    port = port or free_port()
    home.mkdir(parents=True, exist_ok=True)
    ftf = ["nice", "-n", "5", sys.executable, "-m", "finetuneflow.cli"]
    cmd = [*ftf, "ui", "--no-open", "--port", str(port), *args]
    out = open(log, "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        cmd, env=studio_env(home), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    studio = Studio(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(studio.url + "/", timeout=2).status_code == 200:
                return studio
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_studio(studio)
    pytest.fail(f"ftf ui did not start\n{studio.tail()}")


def pause(pid: int, database: Path | None = None) -> None:
    """SIGSTOP a process and its children (its own session: one process group). With ``database``
    (SQLite), only at a moment it holds no write transaction there: paused inside one, it would
    keep every other writer waiting (a 5 s busy timeout, then an error)."""
    for _ in range(100):
        os.killpg(pid, signal.SIGSTOP)
        if database is None or _no_writer(database):
            return
        os.killpg(pid, signal.SIGCONT)
        time.sleep(0.02)
    pytest.fail(f"{database} stayed locked while its writer was paused")


def resume(pid: int) -> None:
    os.killpg(pid, signal.SIGCONT)


@contextmanager
def paused(pid: int, database: Path | None = None) -> Iterator[None]:
    """:func:`pause` for the block, :func:`resume` after."""
    pause(pid, database)
    try:
        yield
    finally:
        resume(pid)


def _no_writer(database: Path) -> bool:
    import sqlite3

    connection = sqlite3.connect(database, timeout=0, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")  # fails at once while another holds the write lock
        connection.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        connection.close()


def worker_of(studio: Studio) -> int:
    """The pid of the ``ftf worker`` that ``ftf ui`` started (a session of its own), from /proc."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            continue
        if ppid == studio.proc.pid and b"worker" in command:
            return int(stat.parent.name)
    pytest.fail(f"ftf ui runs no worker\n{studio.tail()}")


def stop_studio(studio: Studio) -> int:
    """Ctrl-C, as a user stops it: the server ends and stops its worker; killed after 40 s."""
    if studio.proc.poll() is None:
        studio.proc.send_signal(signal.SIGINT)
        try:
            studio.proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(studio.proc.pid, signal.SIGKILL)
            studio.proc.wait()
    return int(studio.proc.returncode)


@pytest.fixture
def studio(ftf_home: Path, tmp_path: Path) -> Iterator[Studio]:
    running = start_studio(ftf_home, tmp_path / "studio.log")
    yield running
    stop_studio(running)


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    """A headless Debian chromium driven by Playwright (never a downloaded browser)."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium binary at {CHROMIUM} (apt-get install chromium; `make browser`)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def shots() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
