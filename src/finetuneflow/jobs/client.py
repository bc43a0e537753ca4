"""What a client of the queue calls (the CLI now, the REST routes later): queue a step, list jobs,
read or follow one's history, cancel one, and reap the jobs whose worker is gone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import suppress
from functools import cache
from typing import Any

from celery import Celery

from finetuneflow.errors import QueueUnavailable
from finetuneflow.jobs.app import TASK, declare_queues, make_app
from finetuneflow.jobs.config import JobsConfig
from finetuneflow.jobs.runners import QUEUES, RUNNERS
from finetuneflow.state import jobs as log
from finetuneflow.state import runs as rf
from finetuneflow.state import session_scope
from finetuneflow.state.repo import find_project, get_or_create_project


@cache
def _app(broker: str) -> Celery:
    cfg = JobsConfig(broker_url=broker)
    declare_queues(cfg, sorted({"default", *QUEUES.values()}))  # a worker may be starting now too
    return make_app(cfg)


def submit(step: str, project: str, args: dict[str, Any], cfg: JobsConfig | None = None) -> int:
    """Queue ``step`` (ingest, dataset, generate, train, evaluate, export) of ``project`` with
    ``args`` (plain JSON: configs as dicts) and return the job id; a worker runs it. Ingest creates
    a new project, the others need an existing one.

    Raises:
        KeyError: an unknown step. LookupError: no such project. QueueUnavailable: the broker did
        not take the job (it is then marked failed, saying so).
    """
    if step not in RUNNERS:
        raise KeyError(f"no job step {step!r}; known: {', '.join(RUNNERS)}")
    with session_scope() as s:
        pid = (get_or_create_project if step == "ingest" else find_project)(s, project).id
    if step == "train":  # chosen now, so a job run again resumes the same run
        args = {"run_id": rf.new_run_id(), **args}
    queue = QUEUES.get(step, "default")
    job_id = log.create(pid, step, {"project": project, "args": args}, queue=queue)
    _send(job_id, 0, queue, cfg or JobsConfig())
    return job_id


def _send(job_id: int, attempts: int, queue: str, cfg: JobsConfig) -> None:
    """Hand job ``job_id`` to the broker; if it does not take it, undo the ``queued`` the job row
    says (``log.unqueue``) and raise QueueUnavailable."""
    try:
        _app(cfg.broker()).send_task(TASK, args=[job_id], queue=queue)
    except Exception as err:  # kombu's connection errors vary by transport; the URL may hold a password
        reason = f"{type(err).__name__} from the broker (FTF_BROKER_URL); is it running?"
        log.unqueue(job_id, attempts, reason)
        raise QueueUnavailable(f"job {job_id} could not be queued: {reason}") from err


def list_jobs(
    limit: int = 50, status: str | None = None, cfg: JobsConfig | None = None
) -> list[dict[str, Any]]:
    """The newest jobs, after reaping the lost ones (see :func:`reap`)."""
    reap(cfg or JobsConfig())
    return log.listed(limit, status)


def show(
    job_id: int, cfg: JobsConfig | None = None, after: int = 0, limit: int | None = None
) -> dict[str, Any]:
    """A job's summary with its history under ``events`` (those after seq ``after``, at most
    ``limit`` of them), after reaping the lost jobs (a job whose process died shows so).
    ``next_after`` is the seq to read on from when more events follow, else None. Raises
    LookupError if unknown."""
    reap(cfg or JobsConfig())
    job = log.get(job_id)
    events = log.events(job_id, after, None if limit is None else limit + 1)
    more = limit is not None and len(events) > limit
    events = events[:limit] if more else events
    return {**job, "events": events, "next_after": events[-1]["seq"] if more else None}


def follow(job_id: int, after: int = 0, poll_s: float = 0.5) -> Iterator[dict[str, Any]]:
    """A job's events with ``seq`` > ``after``, then each new one as it is written, until the job
    is done (what ``ftf jobs logs --follow`` and a future SSE stream read)."""
    while True:
        done = log.get(job_id)["status"] in log.DONE  # read before the events: none is missed
        page = log.events(job_id, after, log.EVENT_PAGE)
        for event in page:
            after = event["seq"]
            yield event
        if len(page) == log.EVENT_PAGE:  # more already written: read on at once
            continue
        if done:
            return
        time.sleep(poll_s)


def cancel(job_id: int) -> str:
    """Cancel a job (queued: at once; running: at its next progress event). Its status after."""
    return log.request_cancel(job_id)


def reap(cfg: JobsConfig) -> list[int]:
    """Running jobs silent for longer than they may be (``state.jobs.allowed_silence``): a queued job is
    sent again while it has attempts left and ``requeue_lost`` is on (training resumes from its
    checkpoint), unless it was asked to stop (then it ends ``cancelled``); any other is marked
    failed (``lost``). Returns the ids it handled."""
    handled = []
    for job in log.stale(cfg.stale_after_s):
        allowed = log.allowed_silence(job, cfg.stale_after_s)
        if log.silent_s(job) < allowed:
            continue
        handled.append(job["id"])
        if (
            job["queue"]
            and cfg.requeue_lost
            and job["attempts"] < cfg.max_attempts
            and not job["cancel_requested"]
        ):
            # conditional: of two reapers (or a reaper and a redelivery) one sends it, never both
            reason = f"no heartbeat for {allowed:g} s"
            if log.requeue(job["id"], job["attempts"], reason, allowed):
                with suppress(QueueUnavailable):  # running (and stale) again: the next reap retries
                    _send(job["id"], job["attempts"], job["queue"], cfg)
        else:
            log.mark_lost(job["id"], allowed, job["attempts"])
    return handled
