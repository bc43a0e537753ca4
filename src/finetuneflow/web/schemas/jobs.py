"""Jobs: a queued or running step and its event log."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class JobPublic(BaseModel):
    """A job's summary (its history: ``GET /api/jobs/{id}`` or the event stream)."""

    id: int
    project_id: int | None
    step: str
    status: str
    progress: float | None
    message: str | None
    params: dict[str, Any] | None
    result: dict[str, Any] | None
    error: str | None
    queue: str | None
    attempts: int
    cancel_requested: bool
    created_at: str | None
    updated_at: str | None
    heartbeat_at: str | None


class JobEventPublic(BaseModel):
    """One entry of a job's append-only log (its ``seq`` is the SSE event id)."""

    seq: int
    at: str
    kind: str
    payload: dict[str, Any]


class JobDetail(JobPublic):
    events: list[JobEventPublic]
    next_after: int | None = None
    """With ``limit``: the ``after`` that reads the next page of events; null when none follow."""


class JobCancelled(BaseModel):
    id: int
    status: str
