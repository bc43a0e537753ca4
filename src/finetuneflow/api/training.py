"""Training: start a run, or resume one from its last checkpoint. Records the run in the DB."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetuneflow import paths
from finetuneflow.api._common import project_id, record_run, reopen_run, run_recorded
from finetuneflow.api.runs import run_dir
from finetuneflow.config import to_dict
from finetuneflow.events import EventSink
from finetuneflow.state import runs as rf

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
    records the run, the others only train. A ``run_id`` given must be one every client can name
    (1-64 letters, digits, ``.``, ``_`` or ``-``; ValueError otherwise).
    """
    from finetuneflow.train import distributed as dd
    from finetuneflow.train.config import TrainConfig

    cfg: TrainConfig = config or TrainConfig()
    if run_id is not None:
        rf.check_new_run_id(run_id)
    dataset_dir = paths.project_dir(project) / "datasets" / dataset
    if not (dataset_dir / "manifest.json").exists():
        raise LookupError(f"project {project!r} has no dataset {dataset!r}; run `ftf dataset build` first")
    dist = _join_ranks(cfg)
    run_id = dd.broadcast(run_id or rf.new_run_id(), dist)
    folder = rf.run_folder(paths.project_dir(project), run_id)
    if dist.main:
        record_run(project_id(project), run_id, folder, rf.CAUSAL, dataset, cfg.base_model, to_dict(cfg))
    return _train_tracked(project, run_id, dataset, dataset_dir, folder, cfg, on_event, resume=False)


def resume(project: str, run_id: str, on_event: EventSink | None = None) -> dict[str, Any]:
    """Continue an interrupted run from its newest checkpoint, with the settings it started with.

    Raises:
        LookupError: no such run, or it has no recorded settings (it died before training began).
    """
    from finetuneflow.config import from_dict
    from finetuneflow.train.config import TrainConfig

    folder = run_dir(project, run_id)
    if not (folder / rf.CONFIG).exists():
        raise LookupError(f"run {run_id!r} never started training (no config.json); start a new run")
    started = rf.read_json(folder / rf.CONFIG)
    if rf.CLASSIFY in started:
        raise LookupError(
            f"run {run_id!r} is a classification run; resume it with `ftf classify train --resume {run_id}`"
        )
    cfg = from_dict(TrainConfig, started["train"])
    run = reopen_run(run_id, folder)
    dataset = run.dataset if run else Path(started["dataset"]).name
    _join_ranks(cfg)
    dataset_dir = Path(started["dataset"])
    return _train_tracked(project, run_id, dataset, dataset_dir, folder, cfg, on_event, resume=True)


def _join_ranks(cfg: TrainConfig) -> Any:
    from finetuneflow import hardware
    from finetuneflow.train import distributed as dd

    return dd.init(hardware.pick_device(cfg.device))


def _train_tracked(
    project: str, run_id: str, dataset: str, dataset_dir: Path, folder: Path, cfg: TrainConfig,
    on_event: EventSink | None, resume: bool,
) -> dict[str, Any]:  # fmt: skip
    from finetuneflow.train import distributed as dd
    from finetuneflow.train.step import train as train_step

    if not dd.from_env().main:  # other ranks: no job rows, no run status
        return {"run_id": run_id, **train_step(dataset_dir, folder, cfg, on_event, resume=resume)}
    params = {"run_id": run_id, "dataset": dataset, "resume": resume}
    summary = run_recorded(
        "train", project, run_id, params, on_event,
        lambda sink: train_step(dataset_dir, folder, cfg, sink, resume=resume),
    )  # fmt: skip
    return {"run_id": run_id, **summary}
