"""What each studio page shows, read from the server's state (database rows and project folders),
never from the browser: a reload, another tab or a restarted server renders the same page."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from markupsafe import Markup, escape

from finetuneflow import api, paths
from finetuneflow.api import projects as papi
from finetuneflow.api import review
from finetuneflow.state import jobs as log
from finetuneflow.state import runs as rf

STEPS = (
    ("model", "Model"),
    ("task", "Task"),
    ("data", "Data"),
    ("preview", "Preview"),
    ("review", "Review"),
    ("hardware", "Hardware"),
    ("train", "Train"),
    ("evaluate", "Evaluate"),
    ("export", "Export"),
)
DATASET = "default"  # the wizard builds and trains one dataset per project, as `ftf` does by default


def bold(text: Any) -> Markup:
    """``text`` HTML-escaped, its Markdown ``**bold**`` (the verdict sentences use it) as <strong>."""
    return Markup(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", str(escape(str(text or "")))))


def projects() -> list[dict[str, Any]]:
    """Every project, newest first, with its counts (files, chunks, examples, runs)."""
    return list(reversed(papi.list_projects()))


def project_exists(name: str) -> bool:
    try:
        papi.show_project(name)
    except LookupError:
        return False
    return True


def recent_jobs(project: str | None = None, step: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The newest jobs, of one project (and step) if given. Job params hold the project's name; a
    job with no project id was a deleted project's (kept as history): never the jobs of a project
    made again under that name, and named "(deleted)" in the full list."""
    found = []
    for job in log.listed(500):
        params = job.get("params") or {}
        name, detached = params.get("project", ""), job["project_id"] is None and params.get("project")
        if project is not None and (name != project or detached):
            continue
        if step is not None and job["step"] != step:
            continue
        found.append({**job, "project": f"{name} (deleted)" if detached else name})
        if len(found) >= limit:
            break
    return found


def job_or_latest(project: str, steps: tuple[str, ...], job_id: int | None) -> dict[str, Any] | None:
    """The job a page follows: the one named in its URL, else the project's newest of ``steps``."""
    if job_id is not None:
        try:
            return log.get(job_id)
        except LookupError:
            return None
    for job in recent_jobs(project, limit=100):
        if job["step"] in steps:
            return job
    return None


def ingest_report(project: str) -> dict[str, Any] | None:
    try:
        return api.ingest_report(project)
    except (LookupError, FileNotFoundError):
        return None


def examples(
    project: str, limit: int = 100, origin: str | None = None, offset: int = 0, deleted: bool = False
) -> dict[str, Any]:
    """The review list: the dataset's examples (of one ``origin`` if given: llm, converter, chat)
    but the deleted ones (only those with ``deleted``, to restore), and the counts by status."""
    status = "deleted" if deleted else None
    try:
        page = review.list_examples(
            project, DATASET, status=status, origin=origin, limit=limit, offset=offset
        )
        counts = review.review_counts(project, DATASET)
    except (LookupError, ValueError):
        return {"rows": [], "total": 0, "counts": {}}
    return {"rows": page.items, "total": page.total, "counts": counts}


def dataset_ready(project: str) -> bool:
    return (paths.project_dir(project) / "datasets" / DATASET / "manifest.json").is_file()


def runs(project: str) -> list[dict[str, Any]]:
    try:
        return api.list_runs(project)
    except LookupError:
        return []


def run_metrics(project: str, run_id: str, key: str = "loss") -> list[dict[str, Any]]:
    """The run's ``metrics.jsonl`` lines with ``key``: the training loss (the chart's points after
    a reload), or ``eval_loss`` (its second line)."""
    records = rf.read_metrics(paths.project_dir(project) / "runs" / run_id)
    return [m for m in records if key in m and "step" in m]


def evaluation(project: str, run_id: str) -> dict[str, Any] | None:
    path = paths.project_dir(project) / "runs" / run_id / "evaluation.json"
    return json.loads(path.read_text()) if path.is_file() else None


def exports(project: str, run_id: str) -> list[dict[str, Any]]:
    """One row per exported artefact: its format, its files (name, download link, sha256 when
    known), size and verification in words, from the ``export.json`` the export step wrote."""
    folder = paths.project_dir(project) / "exports" / run_id
    path = folder / "export.json"
    if not path.is_file():
        return []
    rows = []
    for name, result in json.loads(path.read_text()).items():
        files = result.get("files") if isinstance(result, dict) else None
        if isinstance(files, dict) and files and all(isinstance(v, dict) for v in files.values()):
            items = [(f"{name} {t}", item) for t, item in files.items()]  # one per type (GGUF)
        else:
            items = [(name, result)]
        rows += [
            _export_row(project, run_id, label, item, folder)
            for label, item in items
            if isinstance(item, dict)
        ]
    return rows


def download_url(project: str, run_id: str, file: str) -> str:
    """Where the REST API serves one file of the run's export folder (``file`` relative to it)."""
    return f"/api/projects/{quote(project)}/exports/{quote(run_id)}/files/{quote(file)}"


def export_zip(project: str, run_id: str) -> Path:
    """The run's export zip (``exports/<run-id>.zip``). Raises LookupError when there is none."""
    from finetuneflow.state import runs as rf

    path = paths.project_dir(project) / "exports" / f"{rf.check_run_id(run_id)}.zip"
    if not path.is_file() or path.is_symlink():
        raise LookupError(f"run {run_id!r} has no export zip; export it with the zip format")
    return path


def _export_row(project: str, run_id: str, label: str, item: dict[str, Any], folder: Path) -> dict[str, Any]:
    target = Path(str(item.get("path", "")))
    sha = str(item.get("sha256", ""))[:12]
    files: list[dict[str, str]]
    if target.suffix == ".zip" and target.parent == folder.parent:  # beside the folder: the studio serves it
        href = f"/ui/projects/{quote(project)}/exports/{quote(run_id)}.zip"
        files = [{"name": target.name, "href": href, "sha256": sha}]
    elif target.is_dir() and target.is_relative_to(folder):  # a folder: each file its own link
        sums = item.get("files")
        sums = sums if isinstance(sums, dict) else {}
        names = [f"{target.relative_to(folder)}/{f.name}" for f in sorted(target.iterdir()) if f.is_file()]
        files = [{"name": n, "href": download_url(project, run_id, n),
                  "sha256": str(sums.get(Path(n).name, ""))[:12]} for n in names]  # fmt: skip
    elif target.is_file() and target.is_relative_to(folder):
        rel = str(target.relative_to(folder))
        files = [{"name": rel, "href": download_url(project, run_id, rel), "sha256": sha}]
    else:
        files = [{"name": target.name, "href": "", "sha256": sha}]
    return {"format": label, "files": files, "mb": round(int(item.get("bytes", 0) or 0) / 1e6, 2),
            "verification": verification(item)}  # fmt: skip


def verification(item: dict[str, Any]) -> dict[str, Any]:
    """An artefact's check as ``{"ok": True/False/None, "text": ...}`` (None: nothing to check)."""
    v = item.get("verify")
    if not v:
        diff = item.get("max_logit_diff_vs_adapter")
        if diff is not None:
            return {"ok": True, "text": f"logits match the adapter model within {diff:.1e}"}
        return {"ok": None, "text": "no check for this format"}
    if isinstance(v, dict) and "passed" in v:
        words = f"max diff {v.get('max_abs_diff', 0):.2g}, top-1 {v.get('top1_agreement', 0):.3f}"
        return {"ok": bool(v["passed"]), "text": f"{'passed' if v['passed'] else 'FAILED'}: {words}"}
    return {"ok": None, "text": str(v)}
