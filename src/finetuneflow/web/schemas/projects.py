"""Projects, their uploaded files, chunks and ingest."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from finetuneflow.web.schemas.common import Settings, Strict


class ProjectCreate(Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class DatasetSummary(BaseModel):
    name: str
    built: bool
    pool: int = Field(description="Examples of this name in the review pool")
    counts: dict[str, Any]


class ProjectDeleted(BaseModel):
    project: str
    bytes: int = Field(description="Bytes its folder held (uploads, datasets, runs, exports, memory)")


class ProjectPublic(BaseModel):
    name: str
    created_at: str
    files: int
    chunks: int
    examples: int
    runs: int
    datasets: list[DatasetSummary]


class FilePublic(BaseModel):
    """An uploaded file in the project's ``raw/uploads/``."""

    name: str
    size: int
    kind: str = Field(description="Reader key sniffed from the content (.pdf, .docx, .md, ...)")
    renamed_from: str | None = Field(None, description="The name as sent, when it had to be changed")


class IngestCreate(Strict):
    config: Settings = Field(default_factory=dict, description="IngestConfig settings (tokenizer, ...)")


class ChunkPublic(BaseModel):
    id: int
    file: str
    kind: str
    idx: int
    text: str
    n_tokens: int
    page: int | None
    line: int | None
    domain: str | None
    drop_reason: str | None
    duplicate_of: int | None


class ChunkPage(BaseModel):
    items: list[ChunkPublic]
    total: int
    limit: int
    offset: int
