"""Datasets (build, generate) and the examples pool under review."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from finetuneflow.web.schemas.common import Settings, Strict


class DatasetCreate(Strict):
    """Build a dataset as a job."""

    config: Settings = Field(default_factory=dict, description="DatasetConfig settings (name, format, ...)")


class GenerateCreate(Strict):
    """Generate examples with an LLM as a job; the provider's key stays on the server (named by
    ``api_key_env`` / ``api_key_file``, never sent or answered)."""

    provider: Settings = Field(description="ProviderConfig settings (preset, base_url, model, api_key_env)")
    generate: Settings = Field(default_factory=dict, description="GenerateConfig settings")
    config: Settings = Field(default_factory=dict, description="DatasetConfig settings (name, ...)")
    preview: bool = Field(False, description="Only a few chunks, nothing built: look before paying")
    build: bool = Field(True, description="Build the dataset after generating")


class ExamplePublic(BaseModel):
    id: int
    uid: str
    kind: str
    origin: str
    status: str
    split: str
    rating: int | None
    reason: str | None
    source: str
    domain: str | None
    edited: bool
    messages: list[dict[str, Any]] | None
    text: str | None
    question: str | None = None
    answer: str | None = None
    history: list[dict[str, Any]] | None = None


class ExamplePage(BaseModel):
    items: list[ExamplePublic]
    total: int
    limit: int
    offset: int


class ExampleUpdate(Strict):
    """An edit: whole ``messages``, or the first question and/or last answer, or a text example's text."""

    messages: list[dict[str, Any]] | None = None
    question: str | None = None
    answer: str | None = None
    text: str | None = None


class RatingUpdate(Strict):
    rating: int | None = Field(None, ge=1, le=5, description="1-5, or null to clear")


class ApproveMany(Strict):
    ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(min_length=1, max_length=10_000)


class ReviewCounts(BaseModel):
    counts: dict[str, int]
