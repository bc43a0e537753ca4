"""``ftf ui``: refuses an open network bind without a token before starting anything; started, it
runs its own worker (a queued job gets done with nothing else running) and Ctrl-C stops both."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from finetuneflow.cli import app

from .conftest import start_studio, stop_studio


def test_help_names_the_options() -> None:
    out = CliRunner().invoke(app, ["ui", "--help"], terminal_width=200).output
    for flag in ("--host", "--port", "--no-worker", "--open", "--no-open"):
        assert flag in out


def test_an_open_bind_without_a_token_is_refused_before_anything_starts(monkeypatch, ftf_home: Path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("FTF_WEB_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["ui", "--host", "0.0.0.0", "--no-open"])
    assert result.exit_code != 0 and "FTF_WEB_TOKEN" in " ".join(result.output.split())
    assert not (ftf_home / "logs" / "studio-worker.log").exists()  # no worker was started


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        found |= {int(c) for c in text.split()}
    return found | {g for c in found for g in _children(c)}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_the_embedded_worker_runs_jobs_and_stops_with_the_studio(
    ftf_home: Path, tmp_path: Path, tiny_model: Path
) -> None:
    studio = start_studio(ftf_home, tmp_path / "studio.log")
    try:
        httpx.post(studio.url + "/api/projects", json={"name": "w"}).raise_for_status()
        note = ("notes.md", b"# Notes\n\nThe Brindle printer prints labels.\n")
        upload = httpx.post(studio.url + "/api/projects/w/files", files={"files": note})
        upload.raise_for_status()
        config = {"tokenizer": str(tiny_model), "max_tokens": 128}
        queued = httpx.post(studio.url + "/api/projects/w/ingest", json={"config": config})
        assert queued.status_code == 202, queued.text
        job = queued.json()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = httpx.get(studio.url + f"/api/jobs/{job['job_id']}").json()["status"]
            if status in ("finished", "failed"):
                break
            time.sleep(0.5)
        assert status == "finished", studio.tail()
        workers = _children(studio.proc.pid)
        assert workers, "ftf ui started no worker process"
    finally:
        code = stop_studio(studio)
    assert code == 0, studio.tail()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in workers if _alive(p)], "the worker outlived the studio"
    assert os.path.exists(ftf_home / "logs" / "studio-worker.log")
