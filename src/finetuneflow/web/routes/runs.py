"""Runs of a project: list, show, delete, metrics, train and resume (jobs), the training plan,
evaluations (a job, then the stored comparison) and exports (a job, then safe downloads)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import FileResponse

from finetuneflow import api
from finetuneflow.api import projects as papi
from finetuneflow.config import from_dict
from finetuneflow.state import runs as rf
from finetuneflow.web.errors import ApiError
from finetuneflow.web.routes import deleted, queued
from finetuneflow.web.routes.projects import NAME, Project
from finetuneflow.web.schemas.common import ERRORS, JobRef
from finetuneflow.web.schemas.runs import (
    EvaluationCreate,
    ExportCreate,
    ExportPublic,
    PlanCreate,
    RunDeleted,
    RunDetail,
    RunPublic,
    TrainCreate,
)

router = APIRouter(prefix="/api/projects/{project}", tags=["runs"], responses=ERRORS)
RunId = Annotated[str, Path(pattern=NAME, description="Run id")]


@router.get("/runs", response_model=list[RunPublic])
def list_runs(project: Project) -> list[dict[str, Any]]:
    """The project's runs, newest first, with their headline score."""
    return api.list_runs(project)


@router.post("/runs", response_model=JobRef, status_code=202)
def train(project: Project, body: TrainCreate) -> dict[str, Any]:
    """Train as a job (its run id is chosen now: a job re-run after a lost worker resumes it)."""
    from finetuneflow.train.config import TrainConfig

    papi.dataset_dir(project, body.dataset)
    from_dict(TrainConfig, body.config)
    return queued("train", project, {"dataset": body.dataset, "config": body.config})


@router.get("/runs/{run_id}", response_model=RunDetail)
def show_run(project: Project, run_id: RunId) -> dict[str, Any]:
    return papi.show_run(project, run_id)


@router.delete("/runs/{run_id}", response_model=RunDeleted)
def delete_run(project: Project, run_id: RunId) -> dict[str, Any]:
    """Delete the run with its checkpoints, evaluation and exports; 409 while a job still uses it."""
    return deleted(api.delete_run, project, run_id)


@router.get("/runs/{run_id}/metrics", response_model=list[dict[str, Any]])
def run_metrics(
    project: Project, run_id: RunId, after_step: Annotated[int, Query(ge=-1, le=10**9)] = -1
) -> list[dict[str, Any]]:
    """The run's metrics records (loss, tokens/s, ...) after ``after_step``: a live chart polls."""
    return papi.run_metrics(project, run_id, after_step)


@router.post("/runs/{run_id}/resume", response_model=JobRef, status_code=202)
def resume(project: Project, run_id: RunId) -> dict[str, Any]:
    """Resume a stopped or failed run from its newest checkpoint, as a job."""
    run = papi.show_run(project, run_id)
    if run["kind"] != rf.CAUSAL:
        raise ApiError(
            400, f"run {run_id!r} is a {run['kind']} run; resume it with `ftf classify`", "wrong_kind"
        )
    if run["status"] == "finished":
        raise ApiError(409, f"run {run_id!r} has finished; start a new run instead", "run_finished")
    return queued("train", project, {"run_id": run_id, "dataset": run["dataset"]})


@router.post("/plan", response_model=dict[str, Any])
def plan(project: Project, body: PlanCreate) -> dict[str, Any]:
    """``ftf plan``: the memory estimate, recommended changes and (``benchmark``) tokens/s and ETA."""
    from finetuneflow.train.config import TrainConfig

    return papi.plan(project, body.dataset, from_dict(TrainConfig, body.config), body.benchmark)


@router.post("/runs/{run_id}/evaluations", response_model=JobRef, status_code=202)
def evaluate(project: Project, run_id: RunId, body: EvaluationCreate) -> dict[str, Any]:
    """Evaluate base vs tuned as a job; ``GET .../evaluation`` reads the result."""
    from finetuneflow.dataset.presets import ProviderConfig
    from finetuneflow.evaluate.step import EvalConfig

    papi.show_run(project, run_id)
    from_dict(EvalConfig, body.config)
    if body.judge is not None:
        from_dict(ProviderConfig, body.judge)
    return queued("evaluate", project, {"run_id": run_id, **body.model_dump()})


@router.get("/runs/{run_id}/evaluation", response_model=dict[str, Any])
def show_evaluation(project: Project, run_id: RunId) -> dict[str, Any]:
    """The run's stored evaluation: scores per set, base vs tuned, the verdict and the answers."""
    return papi.evaluation(project, run_id)


@router.post("/runs/{run_id}/exports", response_model=JobRef, status_code=202)
def export(project: Project, run_id: RunId, body: ExportCreate) -> dict[str, Any]:
    """Export the run as a job (every format verified by an independent reader)."""
    from finetuneflow.export.step import ExportConfig

    papi.show_run(project, run_id)
    from_dict(ExportConfig, body.config)
    return queued("export", project, {"run_id": run_id, **body.model_dump()})


@router.get("/exports", response_model=list[ExportPublic])
def list_exports(project: Project) -> list[dict[str, Any]]:
    """Every export of the project with its files."""
    return papi.list_exports(project)


@router.get("/exports/{run_id}/files/{path:path}", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}}})  # fmt: skip
def download(project: Project, run_id: RunId, path: str) -> FileResponse:
    """Download one exported file (only files inside that export's folder)."""
    found = papi.export_file(project, run_id, path)
    return FileResponse(found, filename=found.name)
