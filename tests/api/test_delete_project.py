"""``api.delete_project`` (``ftf projects delete``, ``DELETE /api/projects/{name}``): the row, every
row that hangs from it and the folder go together; a project a live or queued job works in stays;
a failure puts back what moved; asking about a missing or malformed name creates nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from recorded import recorded_run
from typer.testing import CliRunner

from finetuneflow import api, paths
from finetuneflow.api import projects as papi
from finetuneflow.errors import ProjectInUse

RUN = "20261206-120000-ab12"


def _job(project: str, status: str, beat_age_s: float = 0.0) -> int:
    from finetuneflow.api._common import project_id
    from finetuneflow.state import jobs, schema, session_scope

    job_id = jobs.create(project_id(project), "build", {}, queue="default" if status == "queued" else None)
    with session_scope() as s:
        s.get(schema.Job, job_id).heartbeat_at = datetime.now(UTC) - timedelta(seconds=beat_age_s)
    return job_id


def _names() -> list[str]:
    return [p["name"] for p in papi.list_projects()]


def _rows(table: str) -> int:
    from sqlalchemy import text

    from finetuneflow.state import session_scope

    with session_scope() as s:
        return int(s.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608 (fixed names)


def test_the_project_its_rows_and_its_folder_go(ftf_home: Path) -> None:
    recorded_run("p", RUN)
    recorded_run("q", "theirs")
    done = _job("p", "running")
    from finetuneflow.state import jobs

    jobs.append(done, "done", {}, status="finished")
    (paths.project_dir("p") / "raw" / "notes.txt").write_text("x" * 50)
    before = _rows("runs"), _rows("jobs"), _rows("job_events")
    gone = api.delete_project("p")
    assert gone["project"] == "p" and gone["bytes"] >= 1000 + 100 + 50
    assert _names() == ["q"] and [r["id"] for r in api.list_runs("q")] == ["theirs"]
    assert _rows("runs") == before[0] - 1  # the database cascaded
    assert (_rows("jobs"), _rows("job_events")) == before[1:]  # the job history stays, detached
    assert jobs.get(done)["project_id"] is None and jobs.get(done)["status"] == "finished"
    assert sorted(p.name for p in (ftf_home / "projects").iterdir()) == ["q"]  # nothing left aside
    with pytest.raises(LookupError, match="no project"):
        api.delete_project("p")
    again = papi.create_project("p")  # the name is free again, and the new project starts empty
    assert (again["runs"], again["files"]) == (0, 0) and api.list_runs("p") == []


def test_missing_and_malformed_names_create_nothing(ftf_home: Path) -> None:
    recorded_run("p", RUN)
    with pytest.raises(LookupError, match="no project"):
        api.delete_project("missing")
    for bad in ("..", "../p", ".deleting-p", "a/b", ""):
        with pytest.raises(ValueError, match="invalid project name"):
            api.delete_project(bad)
    assert sorted(p.name for p in (ftf_home / "projects").iterdir()) == ["p"] and _names() == ["p"]


@pytest.mark.parametrize("status", ["queued", "running"])
def test_a_job_in_the_project_keeps_it(ftf_home: Path, status: str) -> None:
    recorded_run("p", RUN)
    job = _job("p", status)
    with pytest.raises(ProjectInUse, match=f"project 'p' is in use by job {job} .*ftf jobs cancel {job}"):
        api.delete_project("p")
    assert _names() == ["p"] and (paths.project_path("p") / "runs" / RUN).is_dir()


def test_a_dead_job_does_not_keep_it(ftf_home: Path) -> None:
    from finetuneflow.state import jobs

    recorded_run("p", RUN, status="running")  # its training was killed
    dead = _job("p", "running", beat_age_s=3600)  # and its job stopped beating
    assert api.delete_project("p")["project"] == "p"
    assert _names() == [] and jobs.get(dead)["status"] == "failed"  # no reaper sends it again
    assert jobs.stale(60) == []


def test_a_folder_that_cannot_move_leaves_the_project_whole(
    ftf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = recorded_run("p", RUN)
    monkeypatch.setattr(papi, "beside", lambda path: (path, ftf_home / "gone" / "x"))  # the move fails
    with pytest.raises(OSError):
        api.delete_project("p")
    assert _names() == ["p"] and (folder / "adapter" / "adapter_model.safetensors").stat().st_size == 1000


def test_the_row_failing_puts_the_folder_back(ftf_home: Path) -> None:
    from sqlalchemy.orm import Session

    folder = recorded_run("p", RUN)

    def refuse(*_: object) -> None:
        raise RuntimeError("database went away")

    with pytest.MonkeyPatch.context() as patch, pytest.raises(RuntimeError, match="went away"):
        patch.setattr(Session, "delete", refuse)
        api.delete_project("p")
    assert _names() == ["p"] and folder.is_dir()
    assert not (ftf_home / "projects" / ".deleting-p").exists()


def test_a_delete_killed_midway_is_finished_by_the_next(ftf_home: Path) -> None:
    recorded_run("p", RUN)
    root = paths.project_path("p")
    root.rename(root.with_name(".deleting-p"))  # set aside, then killed: the row stays
    assert api.delete_project("p")["bytes"] >= 1000
    assert list((ftf_home / "projects").iterdir()) == [] and _names() == []


def test_a_delete_killed_after_its_commit_is_swept_by_a_listing(
    ftf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from finetuneflow.api import _aside
    from finetuneflow.state import schema, session_scope
    from finetuneflow.state.repo import find_project

    recorded_run("p", RUN)
    recorded_run("q", "theirs")
    for name in ("p", "q"):  # both set aside, then killed: p after its commit, q before it
        paths.project_path(name).rename(ftf_home / "projects" / f".deleting-{name}")
    with session_scope() as s:
        s.delete(find_project(s, "p"))
    assert _names() == ["q"]  # aside just now: a listing leaves it (its delete may still need it)
    assert {".deleting-p", ".deleting-q"} <= {p.name for p in (ftf_home / "projects").iterdir()}
    monkeypatch.setattr(_aside, "SWEEP_AFTER_S", 0.0)
    assert _names() == ["q"]
    left = {p.name for p in (ftf_home / "projects").iterdir()}
    assert ".deleting-p" not in left and ".deleting-q" in left  # q's row stands: kept for its delete
    with session_scope() as s:
        assert s.query(schema.Project).count() == 1
    api.delete_project("q")  # finished by the next delete, as before
    assert list((ftf_home / "projects").iterdir()) == [] and _names() == []


def test_cli_lists_asks_first_and_says_what_went(ftf_home: Path) -> None:
    from finetuneflow.cli import app

    recorded_run("p", RUN)
    runner = CliRunner()
    listed = runner.invoke(app, ["projects"])
    assert listed.exit_code == 0 and "p" in listed.output, listed.output
    kept = runner.invoke(app, ["projects", "delete", "p"], input="n\n")
    assert kept.exit_code != 0 and _names() == ["p"]
    done = runner.invoke(app, ["projects", "delete", "p"], input="y\n")
    assert done.exit_code == 0 and "deleted project p (2 KiB freed)" in done.output, done.output
    again = runner.invoke(app, ["projects", "delete", "p", "--yes"])
    assert again.exit_code == 2 and "no project" in again.output
    bad = runner.invoke(app, ["projects", "delete", "../x", "--yes"])
    assert bad.exit_code == 2 and "invalid project name" in bad.output


def test_a_project_made_again_under_the_name_has_its_own_memory(ftf_home: Path) -> None:
    from finetuneflow.api.memory import close_memories
    from finetuneflow.memory.config import MemoryConfig

    cfg = MemoryConfig(embedder="hash:256")  # no model to load
    close_memories()
    papi.create_project("p")
    api.teach("p", "Error E21 means the water tank is empty.", config=cfg)
    api.delete_project("p")
    papi.create_project("q")  # SQLite gives q the id p had
    papi.create_project("p")
    assert api.recall("p", "What does error E21 mean?", config=cfg) == []
    api.teach("p", "The office is closed on Sundays.", config=cfg)
    assert [m["text"] for m in api.recall("p", "When is the office closed?", config=cfg)] == [
        "The office is closed on Sundays."
    ]
    assert api.recall("q", "When is the office closed?", config=cfg) == []  # not written under p's old id
    close_memories()


def test_a_job_queued_while_the_folder_moves_puts_it_back(
    ftf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from finetuneflow.state import jobs

    folder = recorded_run("p", RUN)
    first = jobs.unfinished
    queued: list[int] = []

    def check_then_queue(*args: object, **kwargs: object) -> object:
        found = first(*args, **kwargs)  # type: ignore[arg-type]
        if not queued:  # a job arrives right after the first look
            queued.append(_job("p", "queued"))
        return found

    monkeypatch.setattr(jobs, "unfinished", check_then_queue)
    with pytest.raises(ProjectInUse, match="in use by job"):
        api.delete_project("p")
    assert queued and _names() == ["p"] and (folder / "metrics.jsonl").is_file()
    assert not (ftf_home / "projects" / ".deleting-p").exists()
