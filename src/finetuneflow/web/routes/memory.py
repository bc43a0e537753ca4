"""A project's memory (teach, recall, list, forget) and one-question chat, through ``api``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from finetuneflow import api
from finetuneflow.api import projects as papi
from finetuneflow.web.routes.projects import Project
from finetuneflow.web.schemas.common import ERRORS
from finetuneflow.web.schemas.memory import ChatCreate, ChatPublic, MemoryCreate, RecallCreate

router = APIRouter(prefix="/api/projects/{project}", tags=["memory"], responses=ERRORS)


@router.get("/memory", response_model=list[dict[str, Any]])
def list_memories(
    project: Project,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    tag: Annotated[str | None, Query(max_length=100)] = None,
    forgotten: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Memory items, newest first (``forgotten``: the forgotten ones)."""
    papi.show_project(project)
    return api.list_memories(project, kind, tag, forgotten, limit)


@router.post("/memory", response_model=dict[str, Any], status_code=201)
def teach(project: Project, body: MemoryCreate) -> dict[str, Any]:
    """Teach the memory a fact; it is stored and indexed when this answers."""
    papi.show_project(project)
    return api.teach(project, body.text, body.importance, body.tags, body.source,
                     expires_in_days=body.expires_in_days)  # fmt: skip


@router.post("/memory/recall", response_model=list[dict[str, Any]])
def recall(project: Project, body: RecallCreate) -> list[dict[str, Any]]:
    """The items best matching ``query``, best first, with their scores."""
    papi.show_project(project)
    return api.recall(project, body.query, body.k)


@router.delete("/memory/{item_id}", response_model=dict[str, Any])
def forget(project: Project, item_id: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> dict[str, Any]:
    """Forget an item (soft: out of recall)."""
    papi.show_project(project)
    return api.forget(project, item_id)


@router.post("/chat", response_model=ChatPublic)
def chat(project: Project, body: ChatCreate) -> dict[str, Any]:
    """One question, one answer (logged like any other exchange). Loads the model: seconds."""
    papi.show_project(project)
    answer = api.chat(project, body.question, body.run_id, base=body.base, memory=body.memory)
    return {"question": body.question, "answer": answer}
