"""Training: start a run, or resume one from its last checkpoint. Records the run in the DB."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetuneflow import paths
from finetuneflow.api._common import jsonable, project_id
from finetuneflow.api.runs import run_dir
from finetuneflow.events import EventSink
from finetuneflow.state import runs as rf
from finetuneflow.state import schema, session_scope
from finetuneflow.state.jobs import tracked
from finetuneflow.state.repo import find_project

if TYPE_CHECKING:  # imported lazily at call time
    from finetuneflow.train.config import TrainConfig


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
    run_id = dd.broadcast(run_id or rf.new_run_id(), dist)
    folder = rf.run_folder(paths.project_dir(project), run_id)
    if dist.main:
        _record_run(project, run_id, dataset, cfg, folder)
    return _train_tracked(project, run_id, dataset, dataset_dir, folder, cfg, on_event, resume=False)


def resume(project: str, run_id: str, on_event: EventSink | None = None) -> dict[str, Any]:
    """Continue an interrupted run from its newest checkpoint, with the settings it started with.

    Raises:
        LookupError: no such run, or it has no recorded settings (it died before training began).
    """
    from finetuneflow.config import from_dict
    from finetuneflow.state import runs as rf
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
        with tracked("train", project_id(project), params, on_event) as (sink, done):
            summary = train_step(dataset_dir, folder, cfg, sink, resume=resume)
            done(jsonable({k: v for k, v in summary.items() if k != "data"}))
    except BaseException:
        _finish_run(run_id, "failed", {})
        raise
    _finish_run(run_id, "finished", jsonable(summary))
    return {"run_id": run_id, **summary}


def _finish_run(run_id: str, status: str, summary: dict[str, Any]) -> None:
    with session_scope() as s:
        run = s.get(schema.Run, run_id)
        if run is not None:
            run.status, run.summary, run.finished_at = status, summary, datetime.now(UTC)
