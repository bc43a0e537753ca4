"""``ftf worker``: a Celery worker in this process (one queue), or one child process per queue
(``default`` with ``concurrency`` processes, ``train`` with one), plus the heartbeat reaper."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

from finetuneflow.config import to_dict
from finetuneflow.jobs.app import declare_queues, make_app
from finetuneflow.jobs.client import reap
from finetuneflow.jobs.config import JobsConfig

QUEUES = ("default", "train")


def run_worker(cfg: JobsConfig, queues: Sequence[str] = QUEUES, loglevel: str = "INFO") -> int:
    """Consume ``queues`` until stopped (Ctrl-C / SIGTERM); returns the exit status.

    Raises:
        ValueError: an unknown queue.
    """
    unknown = set(queues) - set(QUEUES)
    if unknown or not queues:
        raise ValueError(
            f"unknown queue(s) {', '.join(sorted(unknown)) or '(none)'}; known: {', '.join(QUEUES)}"
        )
    declare_queues(cfg, QUEUES)  # before any child or consumer races to create them
    if len(queues) > 1:  # one process per queue: train must not share its slot with data work
        return _children(cfg, queues, loglevel)
    queue = queues[0]
    stop = threading.Event()
    # The first reap runs here, before Celery forks its pool: a fork while the reaper thread was
    # importing (its first reap loads the database driver) left the child waiting forever on that
    # module's import lock, holding a job it never started (seen in a clean-clone test run).
    _reap_once(cfg)
    reaper = threading.Thread(target=_reap_every, args=(cfg, stop), name="ftf-reaper", daemon=True)
    reaper.start()
    app = make_app(cfg)
    concurrency = 1 if queue == "train" else cfg.concurrency
    try:
        app.worker_main(["worker", "-Q", queue, "-c", str(concurrency), "-n", f"{queue}@%h",
                         "--loglevel", loglevel, "--without-gossip", "--without-mingle"])  # fmt: skip
    finally:
        stop.set()
    return 0


def _reap_every(cfg: JobsConfig, stop: threading.Event) -> None:
    """Reap lost jobs every heartbeat until ``stop``."""
    while not stop.wait(cfg.heartbeat_s):
        _reap_once(cfg)


def _reap_once(cfg: JobsConfig) -> None:
    """Reap lost jobs now (a restarted worker picks up what its predecessor left)."""
    try:
        reap(cfg)
    except Exception as err:  # a busy or unreachable database: try again next beat
        print(f"ftf worker: reaping lost jobs failed: {err}", file=sys.stderr)


def _children(cfg: JobsConfig, queues: Sequence[str], loglevel: str) -> int:
    import json
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({**to_dict(cfg), "broker_url": cfg.broker()}, f)
    cmd = [sys.executable, "-m", "finetuneflow.cli", "worker", "--config", f.name, "--loglevel", loglevel]
    procs = [subprocess.Popen([*cmd, "--queues", q]) for q in queues]

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:  # Ctrl-C reached the children too (same process group)
        codes = [p.wait() for p in procs]
    return max(codes)
