"""``/api/projects``: projects, their uploaded files, ingest (a job), its report, and chunks."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from python_multipart.exceptions import MultipartParseError
from starlette.concurrency import run_in_threadpool

from finetuneflow import api, paths
from finetuneflow.api import projects as papi
from finetuneflow.config import from_dict
from finetuneflow.ingest.config import IngestConfig
from finetuneflow.web import uploads
from finetuneflow.web.errors import ApiError
from finetuneflow.web.routes import Config, deleted, queued
from finetuneflow.web.schemas.common import ERRORS, ErrorPublic, JobRef
from finetuneflow.web.schemas.projects import (
    ChunkPage,
    FilePublic,
    IngestCreate,
    ProjectCreate,
    ProjectDeleted,
    ProjectPublic,
)

router = APIRouter(prefix="/api/projects", tags=["projects"], responses=ERRORS)
NAME = paths.PROJECT_NAME.pattern
Project = Annotated[str, Path(pattern=NAME, description="Project name")]
# bounded: an offset past PostgreSQL's bigint (2**63) was a 500 there (schemathesis found it)
Offset = Annotated[int, Query(ge=0, le=10**9, description="Items to skip")]
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["files"],
            "properties": {"files": {
                "type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"},
            }},
        }}},
    }
}  # fmt: skip


@router.get("", response_model=list[ProjectPublic])
def list_projects() -> list[dict[str, Any]]:
    return papi.list_projects()


@router.post("", response_model=ProjectPublic, status_code=201)
def create_project(body: ProjectCreate) -> dict[str, Any]:
    """Create a project (an existing one is returned as it is)."""
    return papi.create_project(body.name)


@router.get("/{project}", response_model=ProjectPublic)
def show_project(project: Project) -> dict[str, Any]:
    return papi.show_project(project)


@router.delete("/{project}", response_model=ProjectDeleted)
def delete_project(project: Project) -> dict[str, Any]:
    """Delete the project with everything in it (files, datasets, runs, exports, chats, memory);
    409 while a job works in it."""
    return deleted(papi.delete_project, project)


@router.get("/{project}/files", response_model=list[FilePublic])
def list_files(project: Project) -> list[dict[str, Any]]:
    """The files uploaded into the project (its ``raw/uploads/``)."""
    papi.show_project(project)
    return uploads.list_uploads(project)


@router.post(
    "/{project}/files",
    response_model=list[FilePublic],
    status_code=201,
    openapi_extra=_UPLOAD_BODY,
    responses={
        415: {"model": ErrorPublic, "description": "Not multipart, or a file type ingest cannot read"},
        507: {"model": ErrorPublic, "description": "Not enough free disk space: nothing was kept"},
    },
)
async def upload_files(project: Project, request: Request, cfg: Config) -> list[dict[str, Any]]:
    """Upload files (multipart, one ``files`` field each) into the project's ``raw/uploads/``:
    size-limited, typed by their content, names made safe; ``POST .../ingest`` reads them."""
    await run_in_threadpool(papi.show_project, project)
    limit = cfg.upload_limit()
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit * uploads.MAX_FILES + 2**20:
        raise ApiError(413, f"the upload is over the limit of {cfg.max_upload_mb:g} MB per file "
                       f"(setting max_upload_mb)", "upload_too_large")  # fmt: skip
    size = int(declared) if declared.isdigit() else 0
    parser, form = uploads.parser(project, request.headers.get("content-type", ""), limit, size)
    try:
        async for chunk in request.stream():
            await run_in_threadpool(parser.write, chunk)
        parser.finalize()
    except MultipartParseError as err:
        form.discard()
        raise ApiError(400, f"the multipart body is malformed: {err}", "bad_multipart") from None
    except BaseException:
        form.discard()
        raise
    return await run_in_threadpool(uploads.store, project, form)


@router.post("/{project}/ingest", response_model=JobRef, status_code=202)
def ingest(project: Project, body: IngestCreate) -> dict[str, Any]:
    """Ingest the uploaded files as a job (settings: ``IngestConfig``)."""
    papi.show_project(project)
    from_dict(IngestConfig, body.config)  # a bad setting is a 400 now, not a failed job later
    folder = uploads.uploads_dir(project)
    if not any(p.is_file() for p in folder.iterdir()):
        raise ApiError(409, "nothing to ingest: upload files first (POST .../files)", "no_files")
    return queued("ingest", project, {"inputs": [str(folder)], "config": body.config})


@router.get("/{project}/ingest-report", response_model=dict[str, Any])
def ingest_report(project: Project) -> dict[str, Any]:
    """The report of the project's last ingest: totals and every input's outcome."""
    return api.ingest_report(project)


@router.get("/{project}/chunks", response_model=ChunkPage)
def list_chunks(
    project: Project,
    kind: Annotated[str | None, Query(pattern="^(text|qa|conversation)$")] = None,
    dropped: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=papi.MAX_PAGE)] = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    """A page of the project's chunks (``dropped``: only dropped / only kept ones)."""
    return papi.list_chunks(project, kind=kind, dropped=dropped, limit=limit, offset=offset)
