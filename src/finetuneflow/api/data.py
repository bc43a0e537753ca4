"""Data steps: ingest files into a project, build and generate its dataset, add its chats to it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetuneflow import paths
from finetuneflow.api._common import jsonable, project_id
from finetuneflow.api.projects import list_datasets
from finetuneflow.dataset.convert import DatasetConfig
from finetuneflow.events import Emitter, EventSink
from finetuneflow.ingest.config import IngestConfig
from finetuneflow.ingest.report import IngestReport, read_report, report_data, write_report
from finetuneflow.state import session_scope
from finetuneflow.state.jobs import tracked
from finetuneflow.state.repo import get_or_create_project

if TYPE_CHECKING:  # imported lazily at call time
    from finetuneflow.dataset.finalize import CountFn
    from finetuneflow.dataset.generate import GenerateConfig
    from finetuneflow.dataset.presets import ProviderConfig


def ingest(
    inputs: Sequence[str | Path],
    project: str = "default",
    config: IngestConfig | None = None,
    on_event: EventSink | None = None,
) -> IngestReport:
    """Read files/folders into the project as chunks with provenance (the project is created if new).

    Every input's outcome is also written to the project folder's ``ingest-report.json`` (see
    :func:`ingest_report`)."""
    from finetuneflow.ingest.step import Target
    from finetuneflow.ingest.step import ingest as ingest_step
    from finetuneflow.models.resolve import resolve_model

    cfg = config or IngestConfig()
    with session_scope() as s:
        project_id = get_or_create_project(s, project).id
    with tracked("ingest", project_id, {"inputs": [str(p) for p in inputs]}, on_event) as (sink, done):
        Emitter("ingest", sink)("tokenizer", message=f"resolving the tokenizer of {cfg.tokenizer}")
        raw_dir = paths.project_dir(project) / "raw"
        target = Target(project_id, raw_dir, resolve_model(cfg.tokenizer), session_scope)
        report = ingest_step([Path(p) for p in inputs], target, cfg, sink)
        paths.project_settings(project, tokenizer=cfg.tokenizer)  # the dataset step measures with it
        data = report_data(report, [str(p) for p in inputs], jsonable(dataclasses.asdict(cfg)))
        write_report(paths.project_dir(project), data)
        done({"counts": report.counts()})
    return report


def ingest_report(project: str = "default") -> dict[str, Any]:
    """The report of the project's last ingest: totals and every input's status, chunks, drops,
    problems and notes, as written to ``ingest-report.json``.

    Raises:
        LookupError: no such project, or it has not been ingested into yet.
    """
    project_id(project)
    return read_report(paths.project_dir(project))


def build_dataset(
    project: str = "default", config: DatasetConfig | None = None, on_event: EventSink | None = None
) -> dict[str, Any]:
    """Turn the project's chunks and reviewed examples into split JSONL files plus exports in
    ``datasets/<name>/``; returns the manifest (with ``path`` and ``stats``). Examples are measured
    with ``config.tokenizer``, else the tokenizer ingest recorded in the project's project.json.

    Raises:
        LookupError: no such project.
        ValueError: nothing to build; a name that differs from an existing dataset's only in case;
            ``ModelError`` (a ValueError): the tokenizer cannot be found.
    """
    from finetuneflow.dataset.step import build_step

    cfg = config or DatasetConfig()
    pid = project_id(project)
    refuse_case_twin(project, cfg.name)
    with tracked("dataset", pid, {"name": cfg.name}, on_event) as (sink, done):
        count = _token_counter(cfg.tokenizer or paths.project_settings(project).get("tokenizer"))
        out_dir = paths.project_dir(project) / "datasets" / cfg.name
        manifest = build_step(session_scope, pid, out_dir, cfg, count, sink)
        done(jsonable(manifest["counts"]))
    return manifest


def refuse_case_twin(project: str, dataset: str) -> None:
    """Refuse (ValueError) a dataset name that differs from an existing dataset's only in case: a
    name is a folder's, and on macOS and Windows the two would share one folder (a build of one
    overwriting the other's files). The studio calls it before it queues a build."""
    for other in list_datasets(project):
        if other["name"] != dataset and other["name"].lower() == dataset.lower():
            raise ValueError(
                f"dataset {other['name']!r} exists in project {project!r} and {dataset!r} differs from "
                f"it only in case: on macOS and Windows the two would share one folder; use "
                f"{other['name']!r} or another name"
            )


def _token_counter(tokenizer: str | None) -> CountFn:
    """Batch token counts with the tokenizer of model ``tokenizer`` (a name or a path; None = the
    default model's), read from its tokenizer.json without loading transformers when it can."""
    from finetuneflow.ingest.prepare import token_fns
    from finetuneflow.models.resolve import DEFAULT_MODEL, resolve_model

    return token_fns(resolve_model(tokenizer or DEFAULT_MODEL))[1]


def generate_dataset(
    project: str,
    provider: ProviderConfig,
    generate: GenerateConfig | None = None,
    config: DatasetConfig | None = None,
    on_event: EventSink | None = None,
    *,
    preview: bool = False,
    build: bool = True,
) -> dict[str, Any]:
    """Write instruction examples from the project's chunks with an LLM (all chunks, or a preview of a
    few), then build the dataset unless ``preview`` or ``build=False``. Returns ``{"generation": ...,
    "manifest": ...}``. A rerun only asks for what is missing.

    Raises:
        LookupError: no such project.
        ValueError: no chunks to ask about (or, when building, nothing to build); a dataset name that
            differs from an existing one's only in case.
    """
    from finetuneflow.dataset.generate import GenerateConfig as _GenerateConfig
    from finetuneflow.dataset.step import generate_step

    cfg = config or DatasetConfig()
    gen = generate or _GenerateConfig()
    pid = project_id(project)
    refuse_case_twin(project, cfg.name)
    params = {"name": cfg.name, "model": provider.model, "preset": provider.preset, "preview": preview}
    with tracked("generate", pid, params, on_event) as (sink, done):
        report = generate_step(session_scope, pid, cfg, gen, provider, sink, preview=preview)
        done(jsonable(report.to_json()))
    out: dict[str, Any] = {"generation": report}
    if build and not preview:
        out["manifest"] = build_dataset(project, cfg, on_event)
    return out


def dataset_from_chats(
    project: str, dataset: str = "default", min_rating: int = 4, on_event: EventSink | None = None
) -> dict[str, Any]:
    """Put the project's corrected chat answers, and those rated ``min_rating`` or more, into the pool
    of ``dataset`` as chat examples (reviewable, deduplicated: a rerun adds nothing twice); write the
    corrections as preference pairs (prompt, chosen, rejected) for TRL's DPOTrainer into
    ``datasets/<dataset>/preference/train.jsonl``. ``ftf dataset build`` then ``ftf train`` learn them.

    Raises:
        LookupError: no such project.
        ValueError: ``min_rating`` is not 1-5, or ``dataset`` is not a valid name (or differs from an
            existing dataset's only in case).
    """
    from finetuneflow.dataset.chats import from_chats_step

    # the name becomes a folder: the build's own rule for it
    if problems := [p for p in DatasetConfig(name=dataset).problems() if p.startswith("name:")]:
        raise ValueError(problems[0])
    pid = project_id(project)
    refuse_case_twin(project, dataset)
    params = {"name": dataset, "min_rating": min_rating}
    with tracked("from_chats", pid, params, on_event) as (_sink, done):
        out_dir = paths.project_dir(project) / "datasets" / dataset
        report = from_chats_step(session_scope, pid, dataset, out_dir, min_rating).to_json()
        done(jsonable(report))
    return report
