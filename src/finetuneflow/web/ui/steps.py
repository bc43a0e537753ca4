"""Per wizard step, the data its page renders: ``DATA[step](project, settings, job_id, run_id)``.

A page that follows a job takes it from its URL (``?job=``) or, after a reload without one, the
project's newest job of that step, so closing the page never loses a running job."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from finetuneflow.web.ui import views
from finetuneflow.web.ui.settings import StudioSettings


@dataclass(frozen=True)
class Query:
    """What a step page's URL may name: the job it follows, the run it shows, the review page."""

    job: int | None = None
    run: str | None = None
    offset: int = 0
    origin: str | None = None
    status: str | None = None  # "deleted": the Review step lists the deleted examples (to restore)


PageData = Callable[[str, StudioSettings, Query], dict[str, Any]]
PAGE = 20  # examples per review page
DEFAULT_MODEL = "smollm2-135m-instruct"  # models/resolve.py's; named here so the page needs no torch


def model(project: str, cfg: StudioSettings, q: Query) -> dict[str, Any]:
    return {"default_model": DEFAULT_MODEL, "is_default": cfg.model == DEFAULT_MODEL}


def task(project: str, cfg: StudioSettings, q: Query) -> dict[str, Any]:
    return {}


def data(project: str, cfg: StudioSettings, q: Query) -> dict[str, Any]:
    return {
        "job": views.job_or_latest(project, ("ingest", "dataset"), q.job),
        "report": views.ingest_report(project),
        "dataset_ready": views.dataset_ready(project),
    }


def preview(project: str, cfg: StudioSettings, q: Query) -> dict[str, Any]:
    found = views.job_or_latest(project, ("generate",), q.job)
    return {"job": found, "generated": views.examples(project, limit=20, origin="llm")["rows"]}


def review(project: str, cfg: StudioSettings, q: Query) -> dict[str, Any]:
    deleted = q.status == "deleted"
    listed = views.examples(project, limit=PAGE, origin=q.origin or None, offset=q.offset, deleted=deleted)
    job = views.job_or_latest(project, ("dataset",), q.job)
    return {**listed, "job": job, "offset": q.offset, "page": PAGE, "origin": q.origin or "",
            "status": "deleted" if deleted else "",
            "dataset_ready": views.dataset_ready(project)}  # fmt: skip


def hardware(project: str, cfg: StudioSettings, q: Query) -> dict[str, Any]:
    return {"dataset_ready": views.dataset_ready(project)}


def train(project: str, cfg: StudioSettings, q: Query) -> dict[str, Any]:
    found = views.job_or_latest(project, ("train",), q.job)
    run_id = q.run or _run_of(found)
    return {
        "job": found,
        "run_id": run_id,
        "points": views.run_metrics(project, run_id) if run_id else [],
        "evals": views.run_metrics(project, run_id, "eval_loss") if run_id else [],
        "runs": views.runs(project),
        "dataset_ready": views.dataset_ready(project),
    }


def evaluate(project: str, cfg: StudioSettings, q: Query) -> dict[str, Any]:
    found = views.job_or_latest(project, ("evaluate",), q.job)
    run_id = _chosen_run(project, q.run or _run_of(found))
    return {"job": found, "run_id": run_id, "runs": _finished(project),
            "evaluation": views.evaluation(project, run_id) if run_id else None}  # fmt: skip


def export(project: str, cfg: StudioSettings, q: Query) -> dict[str, Any]:
    found = views.job_or_latest(project, ("export",), q.job)
    run_id = _chosen_run(project, q.run or _run_of(found))
    return {"job": found, "run_id": run_id, "runs": _finished(project),
            "exports": views.exports(project, run_id) if run_id else []}  # fmt: skip


def _run_of(job: dict[str, Any] | None) -> str | None:
    """The run a job trains, evaluates or exports (chosen when it was queued), if it says."""
    if not job:
        return None
    params = job.get("params") or {}
    args = params.get("args") or params
    result = job.get("result") or {}
    found = args.get("run_id") or (result.get("run_id") if isinstance(result, dict) else None)
    return str(found) if found else None


def _finished(project: str) -> list[dict[str, Any]]:
    return [r for r in views.runs(project) if r["status"] == "finished" and r["kind"] != "classify"]


def _chosen_run(project: str, run_id: str | None) -> str | None:
    finished = _finished(project)
    if run_id and any(r["id"] == run_id for r in finished):
        return run_id
    return finished[0]["id"] if finished else None


DATA: dict[str, PageData] = {
    "model": model,
    "task": task,
    "data": data,
    "preview": preview,
    "review": review,
    "hardware": hardware,
    "train": train,
    "evaluate": evaluate,
    "export": export,
}
