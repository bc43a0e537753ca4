"""``/api/projects/{project}/datasets``: list, build and generate (jobs), and review the examples."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from finetuneflow.api import projects as papi
from finetuneflow.api import review
from finetuneflow.api.data import refuse_case_twin
from finetuneflow.config import from_dict
from finetuneflow.web.routes import queued
from finetuneflow.web.routes.projects import NAME, Offset, Project
from finetuneflow.web.schemas.common import ERRORS, JobRef
from finetuneflow.web.schemas.datasets import (
    ApproveMany,
    DatasetCreate,
    ExamplePage,
    ExamplePublic,
    ExampleUpdate,
    GenerateCreate,
    RatingUpdate,
    ReviewCounts,
)
from finetuneflow.web.schemas.projects import DatasetSummary

router = APIRouter(prefix="/api/projects/{project}/datasets", tags=["datasets"], responses=ERRORS)
Dataset = Annotated[str, Path(pattern=NAME, description="Dataset name")]
ExampleId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("", response_model=list[DatasetSummary])
def list_datasets(project: Project) -> list[dict[str, Any]]:
    papi.show_project(project)
    return papi.list_datasets(project)


@router.post("", response_model=JobRef, status_code=202)
def build_dataset(project: Project, body: DatasetCreate) -> dict[str, Any]:
    """Build a dataset from the chunks and the reviewed pool, as a job (settings: ``DatasetConfig``)."""
    from finetuneflow.dataset.convert import DatasetConfig

    papi.show_project(project)
    refuse_case_twin(project, from_dict(DatasetConfig, body.config).name)  # before a job is queued
    return queued("dataset", project, {"config": body.config})


@router.post("/generate", response_model=JobRef, status_code=202)
def generate(project: Project, body: GenerateCreate) -> dict[str, Any]:
    """Generate examples with an LLM provider as a job (``preview``: a few chunks, no build)."""
    from finetuneflow.dataset.convert import DatasetConfig
    from finetuneflow.dataset.generate import GenerateConfig
    from finetuneflow.dataset.presets import ProviderConfig

    papi.show_project(project)
    from_dict(ProviderConfig, body.provider)
    from_dict(GenerateConfig, body.generate)
    refuse_case_twin(project, from_dict(DatasetConfig, body.config).name)
    return queued("generate", project, body.model_dump())


@router.get("/{dataset}/review", response_model=ReviewCounts)
def review_counts(project: Project, dataset: Dataset) -> dict[str, Any]:
    """Examples per status, and how many are rated and edited."""
    return {"counts": review.review_counts(project, dataset)}


@router.get("/{dataset}/examples", response_model=ExamplePage)
def list_examples(
    project: Project,
    dataset: Dataset,
    status: Annotated[str | None, Query(pattern="^(new|approved|rejected|deleted)$")] = None,
    origin: Annotated[str | None, Query(pattern="^(converter|llm|chat)$")] = None,
    split: Annotated[str | None, Query(max_length=16)] = None,
    min_rating: Annotated[int | None, Query(ge=1, le=5)] = None,
    search: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    """A page of the pool (default: every status but deleted), searchable."""
    page = review.list_examples(project, dataset, status=status, origin=origin, split=split,
                                min_rating=min_rating, search=search, limit=limit, offset=offset)  # fmt: skip
    return page.to_dict()


@router.get("/{dataset}/examples/{example_id}", response_model=ExamplePublic)
def show_example(project: Project, dataset: Dataset, example_id: ExampleId) -> dict[str, Any]:
    """One example with its edit history."""
    return review.get_example(project, dataset, example_id)


@router.patch("/{dataset}/examples/{example_id}", response_model=ExamplePublic)
def edit_example(
    project: Project, dataset: Dataset, example_id: ExampleId, body: ExampleUpdate
) -> dict[str, Any]:
    """Edit an example (the previous version is kept in its history)."""
    return review.edit_example(project, dataset, example_id, **body.model_dump())


@router.delete("/{dataset}/examples/{example_id}", response_model=ExamplePublic)
def delete_example(project: Project, dataset: Dataset, example_id: ExampleId) -> dict[str, Any]:
    """Delete an example (soft: ``restore`` brings it back)."""
    return review.delete_example(project, dataset, example_id)


@router.post("/{dataset}/examples/{example_id}/restore", response_model=ExamplePublic)
def restore_example(project: Project, dataset: Dataset, example_id: ExampleId) -> dict[str, Any]:
    return review.restore_example(project, dataset, example_id)


@router.post("/{dataset}/examples/{example_id}/approve", response_model=ExamplePublic)
def approve_example(project: Project, dataset: Dataset, example_id: ExampleId) -> dict[str, Any]:
    return review.approve_example(project, dataset, example_id)


@router.post("/{dataset}/examples/approve", response_model=dict[str, int])
def approve_examples(project: Project, dataset: Dataset, body: ApproveMany) -> dict[str, int]:
    """Approve several examples, all or none."""
    return {"approved": review.approve_examples(project, dataset, body.ids)}


@router.post("/{dataset}/examples/{example_id}/rate", response_model=ExamplePublic)
def rate_example(
    project: Project, dataset: Dataset, example_id: ExampleId, body: RatingUpdate
) -> dict[str, Any]:
    """Rate an example 1-5 (null clears the rating)."""
    return review.rate_example(project, dataset, example_id, body.rating)
