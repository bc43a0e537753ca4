"""A run recorded in a project's state as training leaves it, without training: for the tests
of what is done with runs (delete, list) at every layer."""

from __future__ import annotations

from pathlib import Path

from finetuneflow import paths


def recorded_run(project: str, run: str, status: str = "finished") -> Path:
    """A recorded run of ``project`` with a folder (1,000 bytes of weights and a metrics line), an
    export folder and an export zip; returns its folder."""
    from finetuneflow.api._common import finish_run, record_run
    from finetuneflow.state import session_scope
    from finetuneflow.state.repo import get_or_create_project

    with session_scope() as s:
        pid = get_or_create_project(s, project).id
    root = paths.project_dir(project)
    folder = root / "runs" / run
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_model.safetensors").write_bytes(b"w" * 1000)
    (folder / "metrics.jsonl").write_text('{"step": 1}\n')
    (root / "exports" / run).mkdir(parents=True)
    (root / "exports" / run / "report.md").write_text("report")
    (root / "exports" / f"{run}.zip").write_bytes(b"z" * 100)
    record_run(pid, run, folder, "causal", "default", "tiny", {})
    if status != "running":
        finish_run(run, status, {})
    return folder
