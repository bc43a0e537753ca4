"""The studio: the REST API (``web/app.py``) plus the wizard's pages and their static files, and
``run_studio``, which serves it with a local job worker beside it so ``ftf ui`` needs nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import webbrowser
from pathlib import Path
from typing import IO

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from finetuneflow import paths
from finetuneflow.state import open_db
from finetuneflow.web.app import create_app
from finetuneflow.web.config import WebConfig
from finetuneflow.web.ui.login import router as login
from finetuneflow.web.ui.pages import router as pages

STATIC = Path(__file__).resolve().parent / "static"
WORKER_STOP_S = 20.0  # a worker finishing its current event gets this long before it is killed


def create_studio_app(cfg: WebConfig | None = None) -> FastAPI:
    """The REST API with the pages at ``/`` and ``/ui/...`` (``/ui/login`` among them) and the
    assets at ``/static``."""
    app = create_app(cfg or WebConfig())
    app.include_router(login)
    app.include_router(pages)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def start_worker(log_path: Path) -> subprocess.Popen[bytes]:
    """``ftf worker`` (both queues) as a child process in a session of its own, its output in
    ``log_path``. It uses the same state folder, database and broker settings as this process."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed with this process
    cmd = [sys.executable, "-m", "finetuneflow.cli", "worker", "--loglevel", "WARNING"]
    return subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=os.environ.copy()
    )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (Celery's warm shutdown: the running task is re-queued later, training resumes from
    its checkpoint), then SIGKILL of its whole session after ``WORKER_STOP_S``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(WORKER_STOP_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_studio(app: FastAPI, cfg: WebConfig, worker: bool = True, open_browser: bool = False) -> None:
    """Serve ``app`` (:func:`create_studio_app`) in the foreground until Ctrl-C, with a local worker
    unless ``worker`` is off (then jobs wait for an ``ftf worker`` started elsewhere); stops that
    worker on the way out."""
    import uvicorn

    url = f"http://{cfg.host}:{cfg.port}/"
    open_db()  # migrate a new state database here, before the worker's processes race to do it
    proc = start_worker(paths.home() / "logs" / "studio-worker.log") if worker else None
    try:
        if open_browser:
            threading.Timer(1.5, webbrowser.open, args=(url,)).start()
        uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
    finally:
        if proc is not None:
            stop_worker(proc)
