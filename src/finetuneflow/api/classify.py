"""Classification: train a classifier on a labelled CSV, resume an interrupted one, predict with a
finished one. Runs are recorded like every training run (kind ``classify``): ``ftf runs`` lists
them, ``api.export`` writes their adapter and report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetuneflow import paths
from finetuneflow.api._common import record_run, reopen_run, run_recorded
from finetuneflow.api.runs import latest_run, require_kind, run_dir
from finetuneflow.config import to_dict
from finetuneflow.errors import ClassifyDataError, ConfigError
from finetuneflow.events import EventSink
from finetuneflow.state import runs as rf
from finetuneflow.state import session_scope
from finetuneflow.state.repo import get_or_create_project

if TYPE_CHECKING:  # imported lazily at call time
    from finetuneflow.classify.config import ClassifyConfig


def train_classifier(
    project: str,
    data: str | Path,
    config: ClassifyConfig | None = None,
    on_event: EventSink | None = None,
    eval_data: str | Path | None = None,
) -> dict[str, Any]:
    """Fine-tune a classifier of the labels in the CSV/TSV ``data`` (held-out examples from
    ``eval_data``, else a stratified split); returns the summary with ``run_id``.

    The project is created if it does not exist yet (a labelled file needs no ingest).

    Raises:
        ConfigError: ``config`` has invalid values (nothing is recorded).
        ClassifyDataError: a file is missing or cannot be used (the message names the rows).
        TrainingError: the loss became NaN/inf.
    """
    from finetuneflow.classify.config import ClassifyConfig

    cfg = config or ClassifyConfig()
    if cfg.problems():
        raise ConfigError(cfg.problems(), "ClassifyConfig")
    csv_path = _existing(data)
    eval_path = _existing(eval_data) if eval_data is not None else None
    with session_scope() as s:
        pid = get_or_create_project(s, project).id
    run_id = rf.new_run_id()
    folder = rf.run_folder(paths.project_dir(project), run_id)
    record_run(pid, run_id, folder, rf.CLASSIFY, csv_path.name[:64], cfg.base_model, to_dict(cfg))
    return _train_recorded(project, run_id, csv_path, eval_path, folder, cfg, on_event, resume=False)


def resume_classifier(project: str, run_id: str, on_event: EventSink | None = None) -> dict[str, Any]:
    """Continue an interrupted classification run from its newest checkpoint, with the settings and
    files it started with (a run without checkpoints starts over); returns the summary.

    Raises:
        LookupError: no such run, it is not a classification run, or it died before training began.
        TrainingError: the run finished already, or its labelled files changed since.
    """
    from finetuneflow.classify.config import ClassifyConfig
    from finetuneflow.config import from_dict

    folder = run_dir(project, run_id)
    if not (folder / rf.CONFIG).exists():
        raise LookupError(f"run {run_id!r} never started training (no config.json); start a new run")
    require_kind(folder, rf.CLASSIFY, "resume a classifier from")
    started = rf.read_json(folder / rf.CONFIG)
    cfg = from_dict(ClassifyConfig, started[rf.CLASSIFY])
    csv_path = Path(started["train_csv"])
    eval_path = Path(started["eval_csv"]) if "eval_csv" in started else None
    reopen_run(run_id, folder)
    return _train_recorded(project, run_id, csv_path, eval_path, folder, cfg, on_event, resume=True)


def predict(project: str, texts: list[str], run_id: str | None = None) -> list[dict[str, Any]]:
    """``{"text", "label", "prob"}`` per text, from a finished classification run (default: the
    project's newest).

    Raises:
        LookupError: no such run, or it is not a classification run.
    """
    from finetuneflow.classify.predict import predict as predict_step

    folder = run_dir(project, run_id or latest_run(project, kind=rf.CLASSIFY))
    require_kind(folder, rf.CLASSIFY, "classify texts with")
    results = predict_step(folder, list(texts))
    return [
        {"text": text, "label": label, "prob": prob}
        for text, (label, prob) in zip(texts, results, strict=True)
    ]


def _existing(path: str | Path) -> Path:
    """``path`` made absolute (a resumed run reads it again, maybe from another folder)."""
    found = Path(path).expanduser().resolve()
    if not found.is_file():
        raise ClassifyDataError(f"no labelled file at {found}")
    return found


def _train_recorded(
    project: str, run_id: str, csv_path: Path, eval_path: Path | None, folder: Path, cfg: ClassifyConfig,
    on_event: EventSink | None, resume: bool,
) -> dict[str, Any]:  # fmt: skip
    from finetuneflow.classify.step import train as classify_step

    params = {"run_id": run_id, "data": str(csv_path), "resume": resume}
    summary = run_recorded(
        "classify", project, run_id, params, on_event,
        lambda sink: classify_step(csv_path, folder, cfg, sink, eval_path, resume=resume),
    )  # fmt: skip
    return {"run_id": run_id, **summary}
