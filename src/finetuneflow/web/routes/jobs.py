"""``/api/jobs``: list, show, cancel, and follow a job's events as server-sent events."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import StreamingResponse

from finetuneflow import jobs
from finetuneflow.state import jobs as log
from finetuneflow.web.routes import Config
from finetuneflow.web.schemas.common import ERRORS
from finetuneflow.web.schemas.jobs import JobCancelled, JobDetail, JobPublic
from finetuneflow.web.sse import MAX_SEQ, job_stream, start_after

router = APIRouter(prefix="/api/jobs", tags=["jobs"], responses=ERRORS)
STATUSES = ("queued", "running", "finished", "failed", "cancelled")
JobId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Job id")]


@router.get("", response_model=list[JobPublic])
def list_jobs(
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    status: Annotated[str | None, Query(pattern="^(" + "|".join(STATUSES) + ")$")] = None,
) -> list[dict[str, Any]]:
    """The newest jobs (lost ones are marked first: a job whose worker died never stays running)."""
    return jobs.list_jobs(limit, status)


@router.get("/{job_id}", response_model=JobDetail)
def show_job(
    job_id: JobId,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="Only the events after this seq")] = 0,
    limit: Annotated[
        int | None, Query(ge=1, le=10_000, description="At most this many events (default: all)")
    ] = None,
) -> dict[str, Any]:
    """A job with its history, whole or a page of it: a long training run's is tens of thousands
    of events. ``next_after`` is the ``after`` of the next page, null on the last."""
    return jobs.show(job_id, after=after, limit=limit)


@router.post("/{job_id}/cancel", response_model=JobCancelled)
def cancel_job(job_id: JobId) -> dict[str, Any]:
    """Cancel a job: a queued one at once, a running one at its next progress event."""
    return {"id": job_id, "status": jobs.cancel(job_id)}


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                     "description": "id: seq, event: kind, data: the event as JSON"}},
)  # fmt: skip
def job_events(
    job_id: JobId,
    cfg: Config,
    after: Annotated[int | None, Query(ge=0, le=MAX_SEQ, description="Send the events after this seq")] = (
        None
    ),
    last_event_id: Annotated[str | None, Header(description="What EventSource sends on reconnect")] = None,
) -> StreamingResponse:
    """The job's events as server-sent events, from the start (or after ``Last-Event-ID`` /
    ``after``), live until the job is done; keep-alive comments while it is quiet."""
    log.get(job_id)  # 404 before the stream starts
    stream = job_stream(job_id, start_after(last_event_id, after), cfg.sse_poll_s, cfg.sse_keepalive_s)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
