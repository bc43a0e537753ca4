"""The studio's pages: the dashboard at ``/`` and the wizard's steps at ``/ui/projects/<p>/<step>``.

Pages are rendered on the server from the state (``views``), so any reload re-draws them; the
actions on them call the REST API from ``static/studio.js`` (the same ``api`` and ``jobs``
functions the CLI calls). The one write this router owns is the wizard's own settings
(``settings.py``), which no step reads until the page sends them with an action."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from finetuneflow import paths
from finetuneflow.config import to_dict
from finetuneflow.errors import ConfigError
from finetuneflow.state import jobs as log
from finetuneflow.web.ui import settings as studio
from finetuneflow.web.ui import steps, views

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parents[1] / "templates"))
TEMPLATES.env.filters["basename"] = lambda value: Path(str(value or "")).name
TEMPLATES.env.filters["bold"] = views.bold
router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request) -> Response:
    return _render(request, "dashboard.html", projects=views.projects(), jobs=views.recent_jobs(limit=15))


@router.get("/ui/projects/{project}")
def project_home(project: str) -> Response:
    return RedirectResponse(f"/ui/projects/{project}/model", status_code=303)


@router.get("/ui/projects/{project}/{step}", response_class=HTMLResponse)
def step_page(
    request: Request, project: str, step: str, job: int | None = None, run: str | None = None,
    offset: int = Query(0, ge=0), origin: str | None = None, status: str | None = None,
) -> Response:  # fmt: skip
    known = dict(views.STEPS)
    if step not in known:
        raise HTTPException(404, f"no wizard step {step!r}; steps: {', '.join(known)}")
    _require_project(project)
    cfg = studio.load(project)
    data = steps.DATA[step](project, cfg, steps.Query(job, run, offset, origin, status))
    return _render(
        request, f"steps/{step}.html", project=project, step=step, title=known[step], cfg=cfg,
        train_config=studio.train_config(cfg), ingest_config=studio.ingest_config(cfg),
        provider_config=studio.provider_config(cfg), **data,
    )  # fmt: skip


@router.post("/ui/projects/{project}/settings")
def save_settings(project: str, changes: dict[str, Any] = Body(...)) -> Response:
    """Save wizard choices (``StudioSettings`` fields); 422 with every problem at once."""
    _require_project(project)
    try:
        saved = studio.save(project, dict(changes))
    except ConfigError as err:
        return JSONResponse({"error": {"message": str(err), "problems": err.errors}}, status_code=422)
    return JSONResponse({"settings": to_dict(saved), "train_config": studio.train_config(saved)})


@router.post("/ui/projects/{project}/provider-key")
def save_provider_key(project: str, body: dict[str, Any] = Body(...)) -> Response:
    """Keep a provider API key for generation jobs: written to a file only its owner may read (the
    worker, another process, reads it from there), answered with that file's path, never the key."""
    _require_project(project)
    key = body.get("api_key")
    if not isinstance(key, str) or not key.strip() or len(key) > 4096:
        return JSONResponse({"error": {"message": "api_key: give the key (one line)"}}, status_code=422)
    return JSONResponse({"api_key_file": str(studio.write_key(project, key.strip()))})


@router.get("/ui/projects/{project}/exports/{run_id}.zip")
def download_zip(project: str, run_id: str) -> Response:
    """The export zip, which lies beside the export folder the REST API serves files from."""
    _require_project(project)
    try:
        path = views.export_zip(project, run_id)
    except (LookupError, ValueError) as err:
        raise HTTPException(404, str(err)) from err
    return FileResponse(path, filename=path.name, media_type="application/zip")


@router.get("/ui/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: int) -> Response:
    try:
        job = log.get(job_id)
    except LookupError as err:
        raise HTTPException(404, str(err)) from err
    return _render(request, "job.html", job=job, project=(job.get("params") or {}).get("project", ""))


def _require_project(project: str) -> None:
    try:
        paths.check_project_name(project)
    except ValueError as err:
        raise HTTPException(404, str(err)) from err
    if not views.project_exists(project):
        raise HTTPException(404, f"no project {project!r}; create it on the dashboard")


def _render(request: Request, template: str, **context: Any) -> Response:
    return TEMPLATES.TemplateResponse(request, template, {"steps": views.STEPS, **context})
