"""The Python API: one function per pipeline step, each a thin wrapper over the step's core.

Wrappers resolve a project's folders and database rows, record a job, and call the pure step
function; the CLI (and later the REST routes and the worker) call these same functions::

    from finetuneflow import api
    api.ingest(["examples/quickstart"], project="demo")
    api.build_dataset("demo")
    run = api.train("demo")
    api.evaluate("demo", run["run_id"])
    api.export("demo", run["run_id"])
    print(api.chat("demo", run["run_id"], "What does error E21 mean?"))
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from finetuneflow import paths
from finetuneflow.dataset.convert import DatasetConfig
from finetuneflow.events import EventSink
from finetuneflow.ingest.step import IngestConfig, IngestReport
from finetuneflow.jobs.track import tracked
from finetuneflow.state import schema, session_scope
from finetuneflow.state.repo import find_project, get_or_create_project

if TYPE_CHECKING:  # these modules are imported lazily at call time
    from finetuneflow.dataset.finalize import CountFn
    from finetuneflow.dataset.generate import GenerateConfig
    from finetuneflow.dataset.presets import ProviderConfig
    from finetuneflow.evaluate.evaluate import EvalConfig
    from finetuneflow.export.export import ExportConfig
    from finetuneflow.train.config import TrainConfig


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _project_id(project: str) -> int:
    with session_scope() as s:
        return find_project(s, project).id


def ingest(
    inputs: Sequence[str | Path],
    project: str = "default",
    config: IngestConfig | None = None,
    on_event: EventSink | None = None,
) -> IngestReport:
    """Read files/folders into the project as chunks with provenance."""
    from finetuneflow.ingest.step import ingest as ingest_step

    cfg = config or IngestConfig()
    with session_scope() as s:
        project_id = get_or_create_project(s, project).id
    with tracked("ingest", project_id, {"inputs": [str(p) for p in inputs]}, on_event) as (sink, done):
        report = ingest_step([Path(p) for p in inputs], project, cfg, sink)
        paths.project_settings(project, tokenizer=cfg.tokenizer)  # the dataset step measures with it
        done({"counts": report.counts()})
    return report


def build_dataset(
    project: str = "default", config: DatasetConfig | None = None, on_event: EventSink | None = None
) -> dict[str, Any]:
    """Turn the project's chunks and reviewed examples into split JSONL files plus exports in
    ``datasets/<name>/``; returns the manifest (with ``path`` and ``stats``). Examples are measured
    with ``config.tokenizer``, else the tokenizer ingest recorded in the project's project.json.

    Raises:
        LookupError: no such project.
        ValueError: nothing to build; ``ModelError`` (a ValueError): the tokenizer cannot be found.
    """
    from finetuneflow.dataset.step import build_step

    cfg = config or DatasetConfig()
    project_id = _project_id(project)
    with tracked("dataset", project_id, {"name": cfg.name}, on_event) as (sink, done):
        count = _token_counter(cfg.tokenizer or paths.project_settings(project).get("tokenizer"))
        out_dir = paths.project_dir(project) / "datasets" / cfg.name
        manifest = build_step(session_scope, project_id, out_dir, cfg, count, sink)
        done(_jsonable(manifest["counts"]))
    return manifest


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
        ValueError: no chunks to ask about (or, when building, nothing to build).
    """
    from finetuneflow.dataset.generate import GenerateConfig as _GenerateConfig
    from finetuneflow.dataset.step import generate_step

    cfg = config or DatasetConfig()
    gen = generate or _GenerateConfig()
    project_id = _project_id(project)
    params = {"name": cfg.name, "model": provider.model, "preset": provider.preset, "preview": preview}
    with tracked("generate", project_id, params, on_event) as (sink, done):
        report = generate_step(session_scope, project_id, cfg, gen, provider, sink, preview=preview)
        done(_jsonable(report.to_json()))
    out: dict[str, Any] = {"generation": report}
    if build and not preview:
        out["manifest"] = build_dataset(project, cfg, on_event)
    return out


def new_run_id() -> str:
    """Sortable and unique: 20261121-143005-3fa2."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def run_dir(project: str, run_id: str) -> Path:
    """Folder of a run. Raises LookupError if it does not exist."""
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise LookupError(f"invalid run id {run_id!r}")
    path = paths.project_dir(project) / "runs" / run_id
    if not path.is_dir():
        raise LookupError(f"no run {run_id!r} in project {project!r}; see `ftf runs --project {project}`")
    return path


def latest_run(project: str) -> str:
    """Id of the newest finished run of the project. Raises LookupError if there is none."""
    with session_scope() as s:
        proj = find_project(s, project)
        run = s.scalars(
            select(schema.Run)
            .where(schema.Run.project_id == proj.id, schema.Run.status == "finished")
            .order_by(schema.Run.created_at.desc())
        ).first()
        if run is None:
            raise LookupError(f"project {project!r} has no finished run; run `ftf train` first")
        return run.id


def train(
    project: str = "default",
    dataset: str = "default",
    config: TrainConfig | None = None,
    on_event: EventSink | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Fine-tune on a built dataset; returns the run summary (with ``run_id``).

    Under ``torchrun``/``accelerate launch`` every rank calls this; rank 0 picks the run id and
    records the run, the others only train.
    """
    from finetuneflow.train import distributed as dd
    from finetuneflow.train.config import TrainConfig

    cfg: TrainConfig = config or TrainConfig()
    dataset_dir = paths.project_dir(project) / "datasets" / dataset
    if not (dataset_dir / "manifest.json").exists():
        raise LookupError(f"project {project!r} has no dataset {dataset!r}; run `ftf dataset build` first")
    dist = _join_ranks(cfg)
    run_id = dd.broadcast(run_id or new_run_id(), dist)
    folder = paths.project_dir(project) / "runs" / run_id
    if dist.main:
        _record_run(project, run_id, dataset, cfg, folder)
    return _train_tracked(project, run_id, dataset, dataset_dir, folder, cfg, on_event, resume=False)


def resume(project: str, run_id: str, on_event: EventSink | None = None) -> dict[str, Any]:
    """Continue an interrupted run from its newest checkpoint, with the settings it started with.

    Raises:
        LookupError: no such run, or it has no recorded settings (it died before training began).
    """
    from finetuneflow.config import from_dict
    from finetuneflow.train import run_files as rf
    from finetuneflow.train.config import TrainConfig

    folder = run_dir(project, run_id)
    if not (folder / rf.CONFIG).exists():
        raise LookupError(f"run {run_id!r} never started training (no config.json); start a new run")
    started = rf.read_json(folder / rf.CONFIG)
    cfg = from_dict(TrainConfig, started["train"])
    with session_scope() as s:
        run = s.get(schema.Run, run_id)
        dataset = run.dataset if run else Path(started["dataset"]).name
        if run is not None:
            run.status = "running"
    _join_ranks(cfg)
    dataset_dir = Path(started["dataset"])
    return _train_tracked(project, run_id, dataset, dataset_dir, folder, cfg, on_event, resume=True)


def _join_ranks(cfg: TrainConfig) -> Any:
    from finetuneflow import hardware
    from finetuneflow.train import distributed as dd

    return dd.init(hardware.pick_device(cfg.device))


def _record_run(project: str, run_id: str, dataset: str, cfg: TrainConfig, folder: Path) -> None:
    from finetuneflow.config import to_dict

    with session_scope() as s:
        proj = find_project(s, project)
        s.add(
            schema.Run(
                id=run_id,
                project_id=proj.id,
                dataset=dataset,
                base_model=cfg.base_model,
                status="running",
                path=str(folder),
                config=to_dict(cfg),
            )
        )


def _train_tracked(
    project: str, run_id: str, dataset: str, dataset_dir: Path, folder: Path, cfg: TrainConfig,
    on_event: EventSink | None, resume: bool,
) -> dict[str, Any]:  # fmt: skip
    from finetuneflow.train import distributed as dd
    from finetuneflow.train.step import train as train_step

    if not dd.from_env().main:  # other ranks: no job rows, no run status
        return {"run_id": run_id, **train_step(dataset_dir, folder, cfg, on_event, resume=resume)}
    params = {"run_id": run_id, "dataset": dataset, "resume": resume}
    try:
        with tracked("train", _project_id(project), params, on_event) as (sink, done):
            summary = train_step(dataset_dir, folder, cfg, sink, resume=resume)
            done(_jsonable({k: v for k, v in summary.items() if k != "data"}))
    except BaseException:
        _finish_run(run_id, "failed", {})
        raise
    _finish_run(run_id, "finished", _jsonable(summary))
    return {"run_id": run_id, **summary}


def _finish_run(run_id: str, status: str, summary: dict[str, Any]) -> None:
    with session_scope() as s:
        run = s.get(schema.Run, run_id)
        if run is not None:
            run.status, run.summary, run.finished_at = status, summary, datetime.now(UTC)


def evaluate(
    project: str,
    run_id: str | None = None,
    config: EvalConfig | None = None,
    on_event: EventSink | None = None,
) -> dict[str, Any]:
    """Base vs tuned on the held-out examples; returns and stores the comparison."""
    from finetuneflow.evaluate.evaluate import EvalConfig
    from finetuneflow.evaluate.evaluate import evaluate as evaluate_step

    run_id = run_id or latest_run(project)
    folder = run_dir(project, run_id)
    with tracked("evaluate", _project_id(project), {"run_id": run_id}, on_event) as (sink, done):
        result = evaluate_step(folder, config or EvalConfig(), sink)
        done({"losses": result["losses"]})
    return result


def export(
    project: str,
    run_id: str | None = None,
    config: ExportConfig | None = None,
    on_event: EventSink | None = None,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Write the adapter, merged model and report into the project's exports/<run-id>/."""
    from finetuneflow.export.export import ExportConfig
    from finetuneflow.export.export import export as export_step

    run_id = run_id or latest_run(project)
    folder = run_dir(project, run_id)
    target = out_dir or paths.project_dir(project) / "exports" / run_id
    with tracked("export", _project_id(project), {"run_id": run_id}, on_event) as (sink, done):
        results = export_step(folder, target, config or ExportConfig(), sink)
        done(_jsonable({k: v.get("path") for k, v in results.items()}))
    return {"path": str(target), **results}


def chat(
    project: str,
    question: str,
    run_id: str | None = None,
    max_new_tokens: int = 128,
    system: str | None = None,
) -> str:
    """Answer ``question`` with the tuned model of a run (greedy)."""
    from finetuneflow.models.generate import generate_reply
    from finetuneflow.models.load import load_tuned

    tuned = load_tuned(run_dir(project, run_id or latest_run(project)))
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question}
    ]
    return generate_reply(tuned.model, tuned.tokenizer, messages, max_new_tokens)


def list_runs(project: str) -> list[dict[str, Any]]:
    """Runs of a project, newest first."""
    with session_scope() as s:
        proj = find_project(s, project)
        runs = s.scalars(
            select(schema.Run).where(schema.Run.project_id == proj.id).order_by(schema.Run.created_at.desc())
        ).all()
        return [
            {
                "id": r.id,
                "status": r.status,
                "dataset": r.dataset,
                "base_model": r.base_model,
                "eval_loss": (r.summary or {}).get("eval_loss"),
                "created_at": str(r.created_at),
            }
            for r in runs
        ]
