"""The project's memory (teach, recall, list, forget) and chat."""

from __future__ import annotations

from pydantic import BaseModel, Field

from finetuneflow.web.schemas.common import Strict


class MemoryCreate(Strict):
    """Teach the memory a fact."""

    text: str = Field(min_length=1, max_length=20_000)
    importance: float | None = Field(None, ge=0, le=1, description="0-1 (default 0.75)")
    tags: list[str] = Field(default_factory=list, max_length=50)
    source: str | None = Field(None, max_length=500)
    expires_in_days: float | None = Field(None, gt=0, le=36_500)


class RecallCreate(Strict):
    query: str = Field(min_length=1, max_length=5_000)
    k: int | None = Field(None, ge=1, le=100)


class ChatCreate(Strict):
    """One question to a run's tuned model (default: the newest finished run) or a base model."""

    question: str = Field(min_length=1, max_length=20_000)
    run_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    base: str | None = Field(None, max_length=500, description="A base model instead of a run")
    memory: bool = Field(True, description="Recall from the project's memory into the prompt")


class ChatPublic(BaseModel):
    question: str
    answer: str
