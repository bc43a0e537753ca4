"""``api.delete_run`` (``ftf runs delete``, ``DELETE /api/.../runs/{id}``): the row, the run folder
and its exports go together; a run a live or queued job uses stays; a failure puts back what moved."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from recorded import recorded_run
from typer.testing import CliRunner

from finetuneflow import api, paths
from finetuneflow.errors import RunInUse

PROJECT, RUN = "p", "20261206-120000-ab12"


def _job(status: str, params: dict[str, object], beat_age_s: float = 0.0) -> int:
    from finetuneflow.state import jobs, schema, session_scope

    job_id = jobs.create(1, "evaluate", params, queue="default" if status == "queued" else None)
    with session_scope() as s:
        s.get(schema.Job, job_id).heartbeat_at = datetime.now(UTC) - timedelta(seconds=beat_age_s)
    return job_id


def _leftovers(project: str = PROJECT) -> list[str]:
    root = paths.project_dir(project)
    return sorted(p.name for sub in ("runs", "exports") for p in (root / sub).iterdir())


def test_the_row_the_folder_and_the_exports_go(ftf_home: Path) -> None:
    recorded_run(PROJECT, RUN)
    recorded_run(PROJECT, "other")
    gone = api.delete_run(PROJECT, RUN)
    assert gone == {"run_id": RUN, "bytes": 1000 + len('{"step": 1}\n') + len("report") + 100}
    assert [r["id"] for r in api.list_runs(PROJECT)] == ["other"]
    assert _leftovers() == ["other", "other", "other.zip"]  # no trash folder left behind
    with pytest.raises(LookupError, match="no run"):
        api.delete_run(PROJECT, RUN)


def test_unknown_and_malformed_ids_and_other_projects(ftf_home: Path) -> None:
    recorded_run(PROJECT, RUN)
    recorded_run("q", "theirs")
    for bad in ("nope", "../q", "..", ".deleting-x", "theirs"):  # theirs: a run of another project
        with pytest.raises(LookupError):
            api.delete_run(PROJECT, bad)
    with pytest.raises(LookupError, match="no project"):
        api.delete_run("missing", RUN)
    assert not (ftf_home / "projects" / "missing").exists()  # asking made no folder
    assert [r["id"] for r in api.list_runs("q")] == ["theirs"] and len(_leftovers()) == 3


@pytest.mark.parametrize(
    ("status", "params"),
    [("queued", {"args": {"run_id": RUN}}), ("running", {"run_id": RUN})],
)
def test_a_job_that_uses_the_run_keeps_it(ftf_home: Path, status: str, params: dict[str, object]) -> None:
    recorded_run(PROJECT, RUN)
    job = _job(status, params)
    with pytest.raises(RunInUse, match=f"job {job} .*ftf jobs cancel {job}"):
        api.delete_run(PROJECT, RUN)
    assert [r["id"] for r in api.list_runs(PROJECT)] == [RUN] and len(_leftovers()) == 3


def test_a_run_whose_process_died_can_go_and_its_job_is_not_sent_again(ftf_home: Path) -> None:
    from finetuneflow.state import jobs

    recorded_run(PROJECT, RUN, status="running")  # its training was killed: the row still says running
    dead = _job("running", {"args": {"run_id": RUN}}, beat_age_s=3600)  # its job stopped beating
    other = _job("running", {"run_id": "another-run"})  # a live job of another run is no obstacle
    assert api.delete_run(PROJECT, RUN)["run_id"] == RUN
    assert api.list_runs(PROJECT) == []
    # marked lost now, so a reaper never sends it again to train the deleted run back
    assert jobs.get(dead)["status"] == "failed" and jobs.get(other)["status"] == "running"
    assert jobs.stale(60) == []


def test_a_failure_midway_puts_everything_back(ftf_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from finetuneflow.api import runs

    folder = recorded_run(PROJECT, RUN)
    root = paths.project_dir(PROJECT)
    stuck = root / "exports" / "stuck.bin"  # a third path whose move fails, after two have moved
    stuck.write_bytes(b"s")
    listed = runs._run_paths
    monkeypatch.setattr(
        runs, "_run_paths", lambda *a: [*listed(*a)[:2], (stuck, root / "gone" / "x"), *listed(*a)[2:]]
    )
    with pytest.raises(OSError):
        api.delete_run(PROJECT, RUN)
    assert [r["id"] for r in api.list_runs(PROJECT)] == [RUN]
    assert (folder / "adapter" / "adapter_model.safetensors").stat().st_size == 1000
    assert (root / "exports" / RUN / "report.md").is_file() and (root / "exports" / f"{RUN}.zip").is_file()
    assert sorted(_leftovers()) == sorted([RUN, RUN, f"{RUN}.zip", "stuck.bin"])  # nothing left aside


def test_cli_asks_first_and_says_what_went(ftf_home: Path) -> None:
    from finetuneflow.cli import app

    recorded_run(PROJECT, RUN)
    runner = CliRunner()
    kept = runner.invoke(app, ["runs", "delete", RUN, "--project", PROJECT], input="n\n")
    assert kept.exit_code != 0 and [r["id"] for r in api.list_runs(PROJECT)] == [RUN]
    listed = runner.invoke(app, ["runs", "--project", PROJECT])
    assert listed.exit_code == 0 and RUN in listed.output
    done = runner.invoke(app, ["runs", "delete", RUN, "--project", PROJECT], input="y\n")
    assert done.exit_code == 0 and f"deleted run {RUN}" in done.output, done.output
    again = runner.invoke(app, ["runs", "delete", RUN, "-p", PROJECT, "--yes"])
    assert again.exit_code != 0 and "no run" in again.output
    recorded_run(PROJECT, "other")  # the group's --project counts for the subcommand too
    grouped = runner.invoke(app, ["runs", "-p", PROJECT, "delete", "other", "--yes"])
    assert grouped.exit_code == 0 and api.list_runs(PROJECT) == [], grouped.output


def test_a_delete_killed_midway_is_finished_by_the_next(ftf_home: Path) -> None:
    folder = recorded_run(PROJECT, RUN)
    folder.rename(folder.with_name(f".deleting-{RUN}"))  # moved aside, then killed: the row stays
    stale = paths.project_dir(PROJECT) / "exports" / f".deleting-{RUN}.zip"
    stale.write_bytes(b"old")  # left by an older delete of a run of the same id, which went whole
    assert api.delete_run(PROJECT, RUN)["bytes"] == 1000 + len('{"step": 1}\n') + len("report") + 100
    assert api.list_runs(PROJECT) == [] and _leftovers() == []


def test_a_delete_killed_after_its_commit_is_swept_by_a_listing(
    ftf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from finetuneflow.api import _aside
    from finetuneflow.state import schema, session_scope

    folder = recorded_run(PROJECT, RUN)
    recorded_run(PROJECT, "kept")
    folder.rename(folder.with_name(f".deleting-{RUN}"))  # set aside, the row deleted, then killed
    exports = paths.project_dir(PROJECT) / "exports"
    (exports / f".deleting-{RUN}.zip").write_bytes(b"zip")
    (exports / ".deleting-kept").mkdir()  # a delete of "kept" killed before its commit: its row stands
    with session_scope() as s:
        s.delete(s.get(schema.Run, RUN))
    assert [r["id"] for r in api.list_runs(PROJECT)] == ["kept"]
    aside = {f".deleting-{RUN}", f".deleting-{RUN}.zip", ".deleting-kept"}
    assert aside <= set(_leftovers())  # aside just now: left alone
    monkeypatch.setattr(_aside, "SWEEP_AFTER_S", 0.0)
    assert [r["id"] for r in api.list_runs(PROJECT)] == ["kept"]
    assert set(_leftovers()) & aside == {".deleting-kept"}


def test_a_job_queued_while_the_paths_move_puts_them_back(
    ftf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from finetuneflow.state import jobs

    recorded_run(PROJECT, RUN)
    first = jobs.unfinished
    queued: list[int] = []

    def check_then_queue(*args: object, **kwargs: object) -> object:
        found = first(*args, **kwargs)  # type: ignore[arg-type]
        if not queued:  # a job naming the run arrives right after the first look
            queued.append(_job("queued", {"args": {"run_id": RUN}}))
        return found

    monkeypatch.setattr(jobs, "unfinished", check_then_queue)
    with pytest.raises(RunInUse):
        api.delete_run(PROJECT, RUN)
    assert queued and [r["id"] for r in api.list_runs(PROJECT)] == [RUN] and len(_leftovers()) == 3


def test_a_run_id_a_caller_chooses_is_one_every_client_can_name(ftf_home: Path) -> None:
    for bad in ("my run", "a/b", ".hidden", "x" * 65, "naïve"):  # the REST API could not name these
        with pytest.raises(ValueError, match="invalid run id"):
            api.train(PROJECT, run_id=bad)
    assert not (ftf_home / "projects" / PROJECT).exists()  # refused before anything was made
