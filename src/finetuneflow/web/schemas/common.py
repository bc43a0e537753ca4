"""Bodies shared by every resource: the error shape, a queued job's reference, a page."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """A request body: unknown fields are refused (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str


class ErrorPublic(BaseModel):
    """Every 4xx and 5xx answer."""

    error: ErrorDetail


class JobRef(BaseModel):
    """A step queued as a job: follow it at ``events`` (server-sent events)."""

    job_id: int
    step: str
    status: str
    events: str = Field(description="URL of the job's event stream")
    run_id: str | None = Field(None, description="A training job's run (chosen when it was queued)")


Settings = dict[str, Any]  # a step's settings as plain JSON, checked by its config class

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorPublic, "description": what}
    for code, what in {
        400: "Invalid input or settings",
        401: "API token missing or wrong",
        404: "No such project, run, job or file",
        409: "Not now: the project's state is in the way (nothing uploaded, a finished run)",
        413: "Body or upload too large",
        429: "Too many write requests",
    }.items()
}
