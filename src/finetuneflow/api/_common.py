"""What every API module shares: a project's id, results made plain JSON, and the run record
(a run's row in the runs table, from started to finished or failed) kept by every training API."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from finetuneflow.events import EventSink
from finetuneflow.state import runs as rf
from finetuneflow.state import schema, session_scope
from finetuneflow.state.jobs import tracked
from finetuneflow.state.repo import find_project


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (what job rows and REST bodies hold)."""
    return json.loads(json.dumps(value, default=str))


def project_id(project: str) -> int:
    """The id of an existing project. Raises LookupError naming the fix when there is none."""
    with session_scope() as s:
        return find_project(s, project).id


def record_run(
    project_id: int,
    run_id: str,
    folder: Path,
    kind: str,
    dataset: str,
    base_model: str,
    config: dict[str, Any],
) -> None:
    """Add a run's row, status ``running``, before its step starts (so a crash leaves a trace).

    Raises:
        ValueError: a run of this id exists (a job whose earlier attempt died before training began
            drops that row first: :func:`forget_unstarted_run`).
    """
    with session_scope() as s:
        if s.get(schema.Run, run_id) is not None:
            raise ValueError(f"run id {run_id!r} is taken: choose another, or resume that run (`--resume`)")
        s.add(
            schema.Run(
                id=run_id,
                project_id=project_id,
                kind=kind,
                dataset=dataset,
                base_model=base_model,
                status="running",
                path=str(folder),
                config=config,
            )
        )


def forget_unstarted_run(run_id: str, folder: Path) -> None:
    """Drop the row of a run that never began training (no ``config.json`` in ``folder``): the
    process that made it was killed while the model loaded, and the job that owns the run id (its
    claim says no other attempt runs) starts it again. A run that began training is left alone."""
    if (folder / rf.CONFIG).exists():
        return
    with session_scope() as s:
        run = s.get(schema.Run, run_id)
        if run is not None:
            s.delete(run)


def reopen_run(run_id: str, folder: Path) -> schema.Run | None:
    """Mark a recorded run ``running`` again (it is being resumed); its row, or None if unrecorded.

    Raises:
        FinishedRunError: the run in ``folder`` finished; its record is left as it is.
    """
    rf.check_not_finished(folder)
    with session_scope() as s:
        run = s.get(schema.Run, run_id)
        if run is not None:
            run.status = "running"
        return run


def finish_run(run_id: str, status: str, summary: dict[str, Any]) -> None:
    with session_scope() as s:
        run = s.get(schema.Run, run_id)
        if run is not None:
            run.status, run.summary, run.finished_at = status, summary, datetime.now(UTC)


def run_recorded(
    step: str,
    project: str,
    run_id: str,
    params: dict[str, Any],
    on_event: EventSink | None,
    work: Callable[[EventSink], dict[str, Any]],
) -> dict[str, Any]:
    """Call ``work`` (a training step) as a tracked job and keep the run's row in step with it:
    ``finished`` with the summary it returns, or ``failed`` if it raises (the error is re-raised)."""
    try:
        with tracked(step, project_id(project), params, on_event) as (sink, done):
            summary = work(sink)
            done(jsonable({k: v for k, v in summary.items() if k != "data"}))
    except BaseException:
        finish_run(run_id, "failed", {})
        raise
    finish_run(run_id, "finished", jsonable(summary))
    return summary
