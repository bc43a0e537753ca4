"""The routers, one module per resource, each a thin layer over ``finetuneflow.api`` and
``finetuneflow.jobs``: parse, call, answer. What they share is here: the settings of the app and
queueing a step as a job."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from finetuneflow import jobs as queue
from finetuneflow.state import jobs as log
from finetuneflow.web.config import WebConfig
from finetuneflow.web.errors import ApiError


def _config(request: Request) -> WebConfig:
    cfg: WebConfig = request.app.state.web_config
    return cfg


Config = Annotated[WebConfig, Depends(_config)]


def queued(step: str, project: str, args: dict[str, Any]) -> dict[str, Any]:
    """Queue ``step`` of ``project`` as a job; its reference (``JobRef``). Blocking: call it from
    a sync route (FastAPI runs those on the thread pool)."""
    job_id = queue.submit(step, project, args)
    job = log.get(job_id)
    run_id = (job["params"].get("args") or {}).get("run_id") if step == "train" else None
    return {"job_id": job_id, "step": step, "status": job["status"], "events": f"/api/jobs/{job_id}/events",
            "run_id": run_id}  # fmt: skip


def deleted(delete: Callable[..., dict[str, Any]], *args: str) -> dict[str, Any]:
    """``delete(*args)`` (a run's or a project's); a file that could not be moved aside is a 409
    with its reason (nothing was deleted), not a 500 or, for a missing file, a 404."""
    try:
        return delete(*args)
    except OSError as err:  # its reason only: the error's own text holds a path of the state folder
        reason = err.strerror or type(err).__name__
        message = f"could not move its files aside ({reason}); nothing was deleted"
        raise ApiError(409, message, "delete_failed") from None
