"""The Celery app and its one task, ``ftf.run``: run job N (its step and arguments are in the job
row, its history goes to ``job_events``). Broker-agnostic: the embedded SQLite broker and Redis
get the same settings; the database keeps the state, so no result backend is needed.

Delivery: ``acks_late`` + ``reject_on_worker_lost`` return the message to the queue when the
process running the job dies (SIGKILL, OOM), and the worker runs it again. When a whole worker
dies, Redis returns its unacknowledged message after ``visibility_timeout_s``, and the embedded
broker never does (kombu's SQLAlchemy transport hides a delivered message for good): for both the
heartbeat reaper (:func:`finetuneflow.jobs.client.reap`) re-queues the job once its heartbeat is
``stale_after_s`` old. A second delivery of a job that is running elsewhere, or done, is skipped,
and the claim itself is one conditional update (``state.jobs.claim``): of two deliveries that both
read the job queued, one runs it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from typing import Any

from celery import Celery, Task
from sqlalchemy.exc import IntegrityError, OperationalError

from finetuneflow.errors import JobCancelled, JobSuperseded, ProviderError
from finetuneflow.jobs.config import JobsConfig
from finetuneflow.jobs.runners import RUNNERS
from finetuneflow.state import jobs as log

TASK = "ftf.run"
# passing failures, safe to retry: every step resumes where it stopped (ingest skips unchanged
# files, generation asks only what is missing, training resumes from its checkpoint)
RETRYABLE: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, OperationalError, ProviderError)
# a provider's failures that pass; a wrong key, model or request fails the same way every time
PASSING_PROVIDER_ERRORS = frozenset({"timeout", "rate_limit", "server", "connection"})


def make_app(cfg: JobsConfig) -> Celery:
    """A Celery app for ``cfg``'s broker, with the ``ftf.run`` task registered."""
    app = Celery("finetuneflow", broker=cfg.broker(), set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # a worker holds only the job it runs
        task_ignore_result=True,  # results and status live in the job's event log
        task_default_queue="default",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    if cfg.broker().startswith(("redis", "rediss")):  # the SQLAlchemy transport takes no such option
        app.conf.broker_transport_options = {"visibility_timeout": cfg.visibility_timeout_s}
    app.task(name=TASK, bind=True)(_task(cfg))
    return app


def declare_queues(cfg: JobsConfig, queues: Sequence[str], attempts: int = 5) -> None:
    """Create ``queues`` on the embedded broker before anything consumes or sends to them.

    kombu's SQLAlchemy transport creates a queue's row on first use (query, then insert) under a
    lock that holds only within one process, so two processes starting at once (``ftf worker``
    starts one per queue) race, and the loser's consumer dies with an IntegrityError while the
    worker process stays up (seen in a test run: no job was ever taken). Declared here first, a
    lost race is retried; once the rows exist every later declare finds them. Redis needs none.
    """
    if not cfg.broker().startswith("sqla+"):
        return
    from kombu import Connection, Queue

    for attempt in range(attempts):
        try:
            with Connection(cfg.broker()) as conn:
                channel = conn.default_channel
                for name in queues:
                    Queue(name, channel=channel).declare()
            return
        except (IntegrityError, OperationalError):  # the other process won the insert, or held the lock
            if attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))


def _task(cfg: JobsConfig) -> Any:
    def run(self: Task, job_id: int) -> None:
        run_job(job_id, cfg, self)

    return run


def run_job(job_id: int, cfg: JobsConfig, task: Task | None = None) -> str:
    """Run queued job ``job_id`` here and record how it ended; returns its final status (or
    ``skipped`` for a delivery of a job that is done, running elsewhere, or has no row)."""
    try:
        job = log.get(job_id)
    except LookupError:  # no such row: a database reset under a broker that kept its messages
        return "skipped"
    except RETRYABLE as err:  # the database is unreachable or locked: keep the message, not lose it
        if task is not None and task.request.retries < cfg.max_retries:
            wait = cfg.backoff(task.request.retries)
            raise task.retry(countdown=wait, max_retries=cfg.max_retries) from err
        raise
    if job["status"] in log.DONE or (job["status"] == "running" and _alive_elsewhere(job, cfg)):
        return "skipped"
    if job["cancel_requested"]:  # asked to stop while no process ran it: a delivery must not start it
        return "cancelled" if log.cancel_unstarted(job_id, int(job["attempts"])) else "skipped"
    attempt = int(job["attempts"]) + 1
    if attempt > cfg.max_attempts:
        return _failed(job_id, RuntimeError(f"started {attempt - 1} times and never finished (max_attempts)"))
    where = {"worker": socket.gethostname(), "pid": os.getpid(), "attempt": attempt,
             "heartbeat_s": cfg.heartbeat_s, "stale_after_s": cfg.stale_after_s}  # fmt: skip
    if not log.claim(job_id, attempt - 1, where):
        return "skipped"  # another delivery of the job started it since it was read
    runner = RUNNERS[job["step"]]
    try:
        with log.attached(job_id, cfg.heartbeat_s, attempt):
            result = runner(job["params"]["project"], job["params"]["args"])
    except JobSuperseded:  # this process was paused past its heartbeat and the job runs elsewhere
        return "skipped"
    except JobCancelled:
        return "cancelled" if log.append(job_id, "cancelled", {}, attempt, status="cancelled") else "skipped"
    except Exception as err:  # the job failed; the worker lives on, and a passing failure is retried
        retries = task.request.retries if task is not None else cfg.max_retries
        # the last attempt fails with its own error, not as "never finished (max_attempts)"
        if task is not None and _passing(err) and retries < cfg.max_retries and attempt < cfg.max_attempts:
            wait = cfg.backoff(retries)
            if not log.append(job_id, "retry", {"error": _text(err), "in_s": wait}, attempt, status="queued"):
                return "skipped"  # superseded: the attempt that holds the job decides its fate
            raise task.retry(countdown=wait, max_retries=cfg.max_retries) from err
        return _failed(job_id, err, attempt)
    plain = _jsonable(result)
    if not log.append(job_id, "finished", {"result": plain}, attempt, status="finished", progress=1.0,
                      result=plain):  # fmt: skip
        return "skipped"
    return "finished"


def _passing(err: BaseException) -> bool:
    """A failure that may not happen again: worth running the job once more, later."""
    if isinstance(err, ProviderError):
        return err.kind in PASSING_PROVIDER_ERRORS
    return isinstance(err, RETRYABLE)


def _failed(job_id: int, err: BaseException, owner: int | None = None) -> str:
    """Fail the job with ``err`` (unless attempt ``owner``, when given, no longer holds it)."""
    if not log.append(job_id, "failed", {"error": _text(err)}, owner, status="failed", error=_text(err)):
        return "skipped"
    return "failed"


def _alive_elsewhere(job: dict[str, Any], cfg: JobsConfig) -> bool:
    """Is the process that last started this running job still at it? On this machine its pid
    says so at once (a killed child of this worker: no); elsewhere, its heartbeat."""
    last = log.started_with(int(job["id"]))
    if last.get("worker") == socket.gethostname():
        return last.get("pid") != os.getpid() and _pid_alive(int(last.get("pid", 0)))
    return log.silent_s(job) < log.allowed_silence(job, cfg.stale_after_s)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))
