"""Record a step invocation as a job row, with its progress, result or error.

The CLI and API wrap every step in :func:`tracked`; the (later) Celery worker will call the same
step functions through it, so a job's status is visible wherever it was started from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from finetuneflow.events import Event, EventSink
from finetuneflow.state import schema, session_scope

MIN_UPDATE_S = 2.0  # do not hammer the database with every training step


@contextmanager
def tracked(
    step: str, project_id: int | None, params: dict[str, Any], on_event: EventSink | None
) -> Iterator[tuple[EventSink, Callable[[dict[str, Any]], None]]]:
    """Yields (event sink, set_result). Marks the job failed with the error text if the body raises."""
    with session_scope() as s:
        job = schema.Job(project_id=project_id, step=step, status="running", params=params)
        s.add(job)
        s.flush()
        job_id = job.id
    last = [0.0]
    result: dict[str, Any] = {}

    def sink(event: Event) -> None:
        if on_event:
            on_event(event)
        now = time.monotonic()
        if event.total and now - last[0] > MIN_UPDATE_S:
            last[0] = now
            _update(
                job_id, progress=float(event.done) / float(event.total), message=event.message or event.stage
            )

    try:
        yield sink, result.update
    except BaseException as err:
        _update(job_id, status="failed", error=f"{type(err).__name__}: {err}")
        raise
    _update(job_id, status="finished", progress=1.0, result=result)


def _update(job_id: int, **values: Any) -> None:
    with session_scope() as s:
        job = s.get(schema.Job, job_id)
        if job is not None:
            for key, value in values.items():
                setattr(job, key, value)
