"""Projects and what they hold, as plain data: the listing side that the REST API (and any other
client) reads, next to the steps that fill them. Also the training plan of a project's dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update

from finetuneflow import paths
from finetuneflow.api._aside import beside, deleting, sweep
from finetuneflow.api._common import project_id
from finetuneflow.api.runs import list_runs, run_dir
from finetuneflow.errors import ProjectInUse
from finetuneflow.state import runs as rf
from finetuneflow.state import schema, session_scope
from finetuneflow.state.repo import find_project, get_or_create_project

if TYPE_CHECKING:  # imported lazily at call time
    from finetuneflow.train.config import TrainConfig

MAX_PAGE = 1000
CHUNK_KINDS = ("text", "qa", "conversation")


def list_projects() -> list[dict[str, Any]]:
    """Every project, oldest first, with its counts (files, chunks, examples, runs). Removes what
    a project delete killed after its commit left (``api/_aside.py``'s :func:`sweep`)."""
    sweep(paths.home() / "projects", _project_names)
    with session_scope() as s:
        rows = s.scalars(select(schema.Project).order_by(schema.Project.id)).all()
        return [_project(s, p) for p in rows]


def _project_names() -> set[str]:
    with session_scope() as s:
        return set(s.scalars(select(schema.Project.name)).all())


def create_project(name: str) -> dict[str, Any]:
    """Create project ``name`` (its folders and row); an existing one is returned as it is.

    Raises:
        ValueError: a name that cannot be a folder (see :func:`finetuneflow.paths.check_project_name`),
            or one that differs from an existing project's only in case.
    """
    paths.check_project_name(name)
    with session_scope() as s:
        return _project(s, get_or_create_project(s, name))


def delete_project(name: str) -> dict[str, Any]:
    """Delete a project and everything in it: its folder (uploads, datasets, runs, exports, memory
    index) and its rows (files, chunks, examples, runs, chats, memories). Its jobs stay in the
    job history, detached from it. Base models (shared by every project), exports written
    elsewhere (``ftf export --out``) and models registered in Ollama stay. Returns what went:
    ``{"project", "bytes"}``.

    The folder is set aside, then the row goes (the database cascades to the rest), then the
    folder (``api/_aside.py``: a failure puts it back; a delete killed midway is finished by the
    next). A job left ``running`` by a dead process is marked lost first.

    Raises:
        LookupError: no such project (asking creates nothing).
        ValueError: a name that cannot be a project's.
        ProjectInUse: a queued job, or a running one whose process still beats, works in it.
        OSError: the folder could not be moved (the project is left whole).
    """
    folder = paths.project_path(name)
    with session_scope() as s:
        pid = find_project(s, name).id
    with deleting(pid, f"project {name!r}", ProjectInUse, [beside(folder)]) as freed, session_scope() as s:
        # its jobs stay as history, detached: deleted, their ids would be given again by SQLite,
        # and a follower of an old job or a stale broker message would land on a new one
        s.execute(update(schema.Job).where(schema.Job.project_id == pid).values(project_id=None))
        project = s.get(schema.Project, pid)
        if project is not None:
            s.delete(project)
    return {"project": name, "bytes": freed["bytes"]}


def show_project(name: str) -> dict[str, Any]:
    """One project's summary. Raises LookupError for an unknown project."""
    with session_scope() as s:
        return _project(s, find_project(s, name))


def _project(s: Any, project: schema.Project) -> dict[str, Any]:
    def count(table: Any) -> int:
        return int(
            s.scalar(select(func.count()).select_from(table).where(table.project_id == project.id)) or 0
        )

    return {
        "name": project.name,
        "created_at": project.created_at.isoformat(),
        "files": count(schema.File),
        "chunks": count(schema.Chunk),
        "examples": count(schema.Example),
        "runs": count(schema.Run),
        "datasets": list_datasets(project.name),
    }


def list_chunks(
    project: str, *, kind: str | None = None, dropped: bool | None = None, limit: int = 50, offset: int = 0
) -> dict[str, Any]:
    """A page of the project's chunks in id order: ``{"items", "total", "limit", "offset"}``. ``kind``
    filters text / qa / conversation; ``dropped`` True shows only dropped chunks, False only kept ones.

    Raises:
        LookupError: no such project. ValueError: a bad kind or page.
    """
    if kind is not None and kind not in CHUNK_KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(CHUNK_KINDS)}")
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise ValueError(f"limit: 1-{MAX_PAGE}; offset: 0 or more")
    pid = project_id(project)
    with session_scope() as s:
        conds: list[Any] = [schema.Chunk.project_id == pid]
        if kind is not None:
            conds.append(schema.Chunk.kind == kind)
        if dropped is not None:
            conds.append(
                schema.Chunk.drop_reason.is_not(None) if dropped else schema.Chunk.drop_reason.is_(None)
            )
        total = s.scalar(select(func.count()).select_from(schema.Chunk).where(*conds)) or 0
        query = (
            select(schema.Chunk, schema.File.path)
            .join(schema.File, schema.File.id == schema.Chunk.file_id)
            .where(*conds)
            .order_by(schema.Chunk.id)
            .limit(limit)
            .offset(offset)
        )
        items = [_chunk(c, path) for c, path in s.execute(query)]
    return {"items": items, "total": int(total), "limit": limit, "offset": offset}


def _chunk(c: schema.Chunk, path: str) -> dict[str, Any]:
    return {
        "id": c.id, "file": path, "kind": c.kind, "idx": c.idx, "text": c.text, "n_tokens": c.n_tokens,
        "page": c.page, "line": c.line, "domain": c.domain, "drop_reason": c.drop_reason,
        "duplicate_of": c.duplicate_of,
    }  # fmt: skip


def list_datasets(project: str) -> list[dict[str, Any]]:
    """The project's datasets: every built one (its folder's manifest counts) and every name the
    examples pool holds, built or not, sorted by name."""
    folder = paths.project_dir(project) / "datasets"
    out: dict[str, dict[str, Any]] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        manifest = sub / "manifest.json"
        data = json.loads(manifest.read_text()) if manifest.is_file() else {}
        out[sub.name] = {"name": sub.name, "built": manifest.is_file(), "counts": data.get("counts") or {}}
    with session_scope() as s:
        pool = s.execute(
            select(schema.Example.dataset, func.count())
            .join(schema.Project, schema.Project.id == schema.Example.project_id)
            .where(schema.Project.name == project)
            .group_by(schema.Example.dataset)
        ).all()
    for name, n in pool:
        out.setdefault(name, {"name": name, "built": False, "counts": {}})["pool"] = int(n)
    return [{"pool": 0, **out[k]} for k in sorted(out)]


def plan(
    project: str, dataset: str, config: TrainConfig | None = None, benchmark: bool = False
) -> dict[str, Any]:
    """``ftf plan`` for one of the project's datasets: memory estimate, recommended changes and,
    with ``benchmark``, tokens/s and an ETA from three real steps.

    Raises:
        LookupError: no such project or dataset. ValueError: the model cannot be resolved.
    """
    from finetuneflow.train.config import TrainConfig as _TrainConfig
    from finetuneflow.train.plan import plan as plan_step

    return plan_step(dataset_dir(project, dataset), config or _TrainConfig(), benchmark=benchmark)


def dataset_dir(project: str, dataset: str) -> Path:
    """The folder of a project's built dataset.

    Raises:
        LookupError: no such project, or the dataset is not built (or its name is no folder name).
    """
    project_id(project)
    if not paths.PROJECT_NAME.match(dataset):  # the same rule as a project's: one plain folder name
        raise LookupError(f"invalid dataset name {dataset!r}")
    folder = paths.project_dir(project) / "datasets" / dataset
    if not (folder / "manifest.json").is_file():
        raise LookupError(f"project {project!r} has no built dataset {dataset!r}; build it first")
    return folder


def show_run(project: str, run_id: str) -> dict[str, Any]:
    """A run as :func:`~finetuneflow.api.list_runs` lists it, with its folder's ``config`` and
    ``summary`` (empty while it runs) and whether it has an evaluation and exports.

    Raises:
        LookupError: no such project or run.
    """
    folder = run_dir(project, run_id)
    listed = next((r for r in list_runs(project) if r["id"] == run_id), None)
    if listed is None:
        raise LookupError(f"no run {run_id!r} in project {project!r}")
    summary = rf.read_json(folder / rf.SUMMARY) if (folder / rf.SUMMARY).is_file() else {}
    config = rf.read_json(folder / rf.CONFIG) if (folder / rf.CONFIG).is_file() else {}
    exports = paths.project_dir(project) / "exports" / run_id
    return {**listed, "config": config, "summary": summary,
            "evaluated": (folder / rf.EVALUATION).is_file(), "exported": exports.is_dir()}  # fmt: skip


def run_metrics(project: str, run_id: str, after_step: int = -1) -> list[dict[str, Any]]:
    """The run's ``metrics.jsonl`` records with ``step`` > ``after_step`` (a live chart polls with
    the last step it has). A line still being written is skipped, not an error."""
    return [r for r in rf.read_metrics(run_dir(project, run_id)) if r.get("step", 0) > after_step]


def evaluation(project: str, run_id: str) -> dict[str, Any]:
    """The run's stored evaluation (base vs tuned). Raises LookupError when it has none yet."""
    path = run_dir(project, run_id) / rf.EVALUATION
    if not path.is_file():
        raise LookupError(f"run {run_id!r} has not been evaluated yet")
    return rf.read_json(path)


def list_exports(project: str) -> list[dict[str, Any]]:
    """Every export of the project: its run and its files (paths relative to the run's folder)."""
    project_id(project)
    root = paths.project_dir(project) / "exports"
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        files = [{"path": str(f.relative_to(folder)), "size": f.stat().st_size}
                 for f in sorted(folder.rglob("*")) if f.is_file() and not f.is_symlink()]  # fmt: skip
        out.append({"run_id": folder.name, "files": files})
    return out


def export_file(project: str, run_id: str, relative: str) -> Path:
    """The exported file ``relative`` of run ``run_id``, only if it really lies inside that export
    folder (no ``..``, no absolute path, no link leading out) and is a regular file.

    Raises:
        LookupError: no such project, export or file (or one outside the folder).
    """
    project_id(project)
    folder = (paths.project_dir(project) / "exports" / rf.check_run_id(run_id)).resolve()
    if "\x00" in relative or not folder.is_dir():
        raise LookupError(f"no export of run {run_id!r}")
    path = (folder / relative).resolve()
    if not path.is_relative_to(folder) or not path.is_file() or (folder / relative).is_symlink():
        raise LookupError(f"no file {relative!r} in the export of run {run_id!r}")
    return path
