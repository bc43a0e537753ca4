"""Finished runs: find them, list them, evaluate, export and delete them (chat with them:
``api/chat.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from finetuneflow import paths
from finetuneflow.api._aside import beside, deleting, sweep
from finetuneflow.api._common import jsonable, project_id
from finetuneflow.errors import RunInUse
from finetuneflow.events import EventSink
from finetuneflow.state import runs as rf
from finetuneflow.state import schema, session_scope
from finetuneflow.state.jobs import tracked
from finetuneflow.state.repo import find_project

if TYPE_CHECKING:  # imported lazily at call time
    from finetuneflow.dataset.presets import ProviderConfig
    from finetuneflow.evaluate.step import EvalConfig
    from finetuneflow.export.step import ExportConfig


def run_dir(project: str, run_id: str) -> Path:
    """Folder of a run. Raises LookupError if it does not exist."""
    path = rf.run_folder(paths.project_dir(project), run_id)
    if not path.is_dir():
        raise _missing(project, run_id)
    return path


def _missing(project: str, run_id: str) -> LookupError:
    return LookupError(f"no run {run_id!r} in project {project!r}; see `ftf runs --project {project}`")


def latest_run(project: str, kind: str | None = rf.CAUSAL) -> str:
    """Id of the newest finished run of the project of ``kind`` (``causal``, ``classify``, or None
    for either). Raises LookupError if there is none."""
    with session_scope() as s:
        proj = find_project(s, project)
        query = select(schema.Run).where(schema.Run.project_id == proj.id, schema.Run.status == "finished")
        if kind is not None:
            query = query.where(schema.Run.kind == kind)
        run = s.scalars(query.order_by(schema.Run.created_at.desc())).first()
        if run is None:
            classify = kind == rf.CLASSIFY
            what, command = ("classification ", "ftf classify train") if classify else ("", "ftf train")
            raise LookupError(f"project {project!r} has no finished {what}run; run `{command}` first")
        return run.id


_USES = {
    rf.CAUSAL: "`ftf evaluate`, `ftf chat` and every `ftf export` format",
    rf.CLASSIFY: "`ftf classify predict` and `ftf export -f adapter -f report`",
}


def require_kind(folder: Path, kind: str, doing: str) -> None:
    """Raise LookupError unless the run in ``folder`` is of ``kind`` (``doing`` names the action).

    A folder without config.json passes: the step says what is missing.
    """
    if not (folder / rf.CONFIG).exists():
        return
    found = rf.run_kind(folder)
    if found != kind:
        raise LookupError(f"cannot {doing} run {folder.name!r}: it is a {found} run, for {_USES[found]}")


def list_runs(project: str) -> list[dict[str, Any]]:
    """Runs of a project, newest first, with their kind and headline score: ``eval_loss`` for a
    causal run, ``accuracy`` and ``macro_f1`` (on its eval examples) for a classification run.
    Removes what a run delete killed after its commit left (``api/_aside.py``'s :func:`sweep`)."""
    with session_scope() as s:
        pid = find_project(s, project).id
    _sweep_runs(project, pid)
    with session_scope() as s:
        runs = s.scalars(
            select(schema.Run).where(schema.Run.project_id == pid).order_by(schema.Run.created_at.desc())
        ).all()
        return [_listed(r) for r in runs]


def _sweep_runs(project: str, pid: int) -> None:
    def standing() -> set[str]:
        with session_scope() as s:
            ids = set(s.scalars(select(schema.Run.id).where(schema.Run.project_id == pid)).all())
        return ids | {f"{i}.zip" for i in ids}

    root = paths.project_path(project)
    for folder in (root / "runs", root / "exports"):
        sweep(folder, standing)


def _listed(run: schema.Run) -> dict[str, Any]:
    summary = run.summary or {}
    scores = (summary.get("eval") or {}) if run.kind == rf.CLASSIFY else {}
    return {
        "id": run.id,
        "kind": run.kind,
        "status": run.status,
        "dataset": run.dataset,
        "base_model": run.base_model,
        "eval_loss": summary.get("eval_loss"),  # a causal run's
        "accuracy": scores.get("accuracy"),  # a classification run's, on its eval examples
        "macro_f1": scores.get("macro_f1"),
        "created_at": str(run.created_at),
    }


def evaluate(
    project: str,
    run_id: str | None = None,
    config: EvalConfig | None = None,
    on_event: EventSink | None = None,
    judge: ProviderConfig | None = None,
) -> dict[str, Any]:
    """Base vs tuned on the run's questions (eval split, held-out, recall probe, general), scored
    answers, losses and the forgetting check; returns and stores the comparison. With
    ``config.judge`` on, ``judge`` names the OpenAI-compatible provider that grades the answers.
    When the project's memory has items (``config.memory`` auto) or ``config.memory`` is on, every
    set is also answered by base+memory and tuned+memory, recalling through :func:`recall`.

    Raises:
        LookupError: no such project or run.
        FileNotFoundError: the run has no trained weights.
        ValueError: ``config.judge`` is on and ``judge`` is None; ``config.memory`` is on and the
            project's memory is empty.
        ProviderError: the judge's API key cannot be loaded.
    """
    from finetuneflow.dataset.provider import Provider
    from finetuneflow.evaluate.step import EvalConfig
    from finetuneflow.evaluate.step import evaluate as evaluate_step

    cfg = config or EvalConfig()
    if cfg.judge and judge is None:
        raise ValueError("judge: on, but no provider was given to grade with (its model at least)")
    run_id = run_id or latest_run(project)
    folder = run_dir(project, run_id)
    require_kind(folder, rf.CAUSAL, "evaluate")
    retrieve = _retriever(project, cfg)
    with tracked("evaluate", project_id(project), {"run_id": run_id}, on_event) as (sink, done):
        client = Provider(judge) if cfg.judge and judge is not None else None
        try:
            result = evaluate_step(folder, cfg, sink, client, retrieve)
        finally:
            if client is not None:
                client.close()
        done({"verdict": (result["verdict"] or {}).get("verdict"), "losses": result["losses"]})
    return result


def _retriever(project: str, cfg: EvalConfig) -> Callable[[str], list[dict[str, Any]]] | None:
    """The project's memory as the evaluate step takes it, or None for no memory columns.

    Raises:
        ValueError: ``cfg.memory`` is on and the memory is empty.
    """
    if cfg.memory == "off":
        return None
    from finetuneflow.api.memory import has_memories, retriever

    if has_memories(project):
        # spares: items that take the place of a question's own source when it is left out
        return retriever(project, 2 * cfg.memories if cfg.memory_exclude_source else cfg.memories)
    if cfg.memory == "on":
        raise ValueError(
            f"memory: on, but project {project!r}'s memory is empty: fill it with `ftf memory sync "
            f"--project {project}` (its ingested documents) or `ftf memory teach`, or set memory: auto"
        )
    return None


def export(
    project: str,
    run_id: str | None = None,
    config: ExportConfig | None = None,
    on_event: EventSink | None = None,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Write the adapter, merged model and report into the project's exports/<run-id>/ (for a
    classification run: its adapter with the head and labels, and its report). Without ``run_id``,
    the newest finished run of either kind."""
    from finetuneflow.export.step import ExportConfig
    from finetuneflow.export.step import export as export_step

    run_id = run_id or latest_run(project, kind=None)
    folder = run_dir(project, run_id)
    target = out_dir or paths.project_dir(project) / "exports" / run_id
    with tracked("export", project_id(project), {"run_id": run_id}, on_event) as (sink, done):
        results = export_step(folder, target, config or ExportConfig(), sink)
        done(jsonable({k: v.get("path") for k, v in results.items()}))
    return {"path": str(target), **results}


def delete_run(project: str, run_id: str) -> dict[str, Any]:
    """Delete a run: its row, its folder (weights, checkpoints, metrics, evaluation) and its
    exports (the folder and the zip). Chats held with it keep their history, which names it.

    The paths are set aside, then the row goes, then the paths (``api/_aside.py``: a failure
    puts everything back; a delete killed midway is finished by the next). One killed after the
    row went leaves its ``.deleting-`` paths, which a later :func:`list_runs` removes. A job left ``running``
    by a dead process that names the run is marked lost first, so that no reaper sends it again
    to train the run back. Returns what went: ``{"run_id", "bytes"}``.

    Raises:
        LookupError: no such project or run, or an id that cannot name a folder.
        RunInUse: a queued job, or a running one whose process still beats, names the run (its
            training, an evaluation or an export).
        OSError: a path could not be moved (the run is left whole).
    """
    rf.check_run_id(run_id)
    with session_scope() as s:
        proj = find_project(s, project)
        run = s.get(schema.Run, run_id)
        if run is None or run.project_id != proj.id:
            raise _missing(project, run_id)
        pid = proj.id
    pairs = _run_paths(paths.project_dir(project), run_id)
    with deleting(pid, f"run {run_id!r}", RunInUse, pairs, run_id) as freed, session_scope() as s:
        run = s.get(schema.Run, run_id)
        if run is not None:
            s.delete(run)
    return {"run_id": run_id, "bytes": freed["bytes"]}


def _run_paths(root: Path, run_id: str) -> list[tuple[Path, Path]]:
    """(each of the run's paths in the project at ``root``, where a delete renames it)."""
    return [
        beside(root / "runs" / run_id),
        beside(root / "exports" / run_id),
        beside(root / "exports" / f"{run_id}.zip"),
    ]
