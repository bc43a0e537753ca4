"""Runs (train, resume), the training plan, evaluations and exports."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from finetuneflow.web.schemas.common import Settings, Strict


class TrainCreate(Strict):
    """Train on a built dataset as a job."""

    dataset: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    config: Settings = Field(
        default_factory=dict, description="TrainConfig settings (base_model, method, ...)"
    )


class PlanCreate(Strict):
    """``ftf plan``: does this training fit this machine, and what should change."""

    dataset: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    config: Settings = Field(default_factory=dict, description="TrainConfig settings")
    benchmark: bool = Field(False, description="Run three real steps for tokens/s and an ETA (slower)")


class EvaluationCreate(Strict):
    config: Settings = Field(default_factory=dict, description="EvalConfig settings")
    judge: Settings | None = Field(None, description="ProviderConfig of the LLM judge (config.judge on)")


class ExportCreate(Strict):
    config: Settings = Field(default_factory=dict, description="ExportConfig settings (formats, ...)")


class RunPublic(BaseModel):
    id: str
    kind: str
    status: str
    dataset: str
    base_model: str
    eval_loss: float | None
    accuracy: float | None
    macro_f1: float | None
    created_at: str


class RunDetail(RunPublic):
    config: dict[str, Any]
    summary: dict[str, Any]
    evaluated: bool
    exported: bool


class ExportedFile(BaseModel):
    path: str
    size: int


class ExportPublic(BaseModel):
    run_id: str
    files: list[ExportedFile]


class RunDeleted(BaseModel):
    run_id: str
    bytes: int = Field(description="Bytes its folder and exports held")
