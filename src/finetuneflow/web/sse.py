"""A job's history as server-sent events, read from the database's event log: each event goes out
with ``id:`` its seq, ``event:`` its kind and ``data:`` its JSON, so a browser's EventSource that
reconnects sends ``Last-Event-ID`` and gets exactly the events it missed, whichever server process
answers (the log outlives any of them). The stream ends once the job is done and drained; a job
whose process died is found out while the stream waits (each keep-alive reaps, as listing jobs
does), so the stream of a job nobody runs any more ends too."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool

from finetuneflow.jobs import client
from finetuneflow.jobs.config import JobsConfig
from finetuneflow.state import jobs as log

_log = logging.getLogger("finetuneflow.web")

RETRY_MS = 2000  # how long a disconnected EventSource waits before it reconnects
MAX_SEQ = 2**31 - 1  # job_events.seq is a 32-bit column: a larger number overflows PostgreSQL's query


def start_after(last_event_id: str | None, after: int | None) -> int:
    """The seq to resume after: ``Last-Event-ID`` (what a reconnecting EventSource sends, so it
    wins over the ``?after=`` of the URL it reconnects to), else ``after``, else 0. An id that is not
    a seq (not digits, or past ``MAX_SEQ``) restarts from the beginning rather than skipping anything."""
    if last_event_id is not None and last_event_id.strip().isdigit():
        seq = int(last_event_id.strip())
        return seq if seq <= MAX_SEQ else 0
    return max(after or 0, 0)


def frame(event: dict[str, Any]) -> str:
    """One event in the SSE wire format (``data`` is one JSON line, so never split)."""
    return f"id: {event['seq']}\nevent: {event['kind']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"


async def job_stream(job_id: int, after: int, poll_s: float, keepalive_s: float) -> AsyncIterator[str]:
    """Events of ``job_id`` after seq ``after``, then each new one, until the job is done; a
    comment line after ``keepalive_s`` of silence keeps proxies and browsers from closing it. The
    database is read on the thread pool, never on the event loop."""
    yield f"retry: {RETRY_MS}\n\n"
    quiet_since = time.monotonic()
    while True:
        # the status is read before the events: an event written in between is read next round
        done = (await run_in_threadpool(log.get, job_id))["status"] in log.DONE
        # a page at a time: a long run's history (an event a step) is never one list in memory
        page = await run_in_threadpool(log.events, job_id, after, log.EVENT_PAGE)
        for event in page:
            after = event["seq"]
            quiet_since = time.monotonic()
            yield frame(event)
        if len(page) == log.EVENT_PAGE:  # more already written: read on at once
            continue
        if done:
            return
        if time.monotonic() - quiet_since >= keepalive_s:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
            await run_in_threadpool(_reap)
        await asyncio.sleep(poll_s)


def _reap() -> None:
    """Mark the jobs whose process is gone (``jobs.client.reap``); a failure here must not end
    the stream (the next keep-alive tries again)."""
    try:
        client.reap(JobsConfig())
    except Exception:
        _log.warning("reaping lost jobs failed", exc_info=True)
