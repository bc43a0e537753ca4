"""The routers, one module per resource, each a thin layer over ``finetuneflow.api`` and
``finetuneflow.jobs``: parse, call, answer. What they share is here: the settings of the app and
queueing a step as a job."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from finetuneflow import jobs as queue
from finetuneflow.state import jobs as log
from finetuneflow.web.config import WebConfig


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
