"""``ftf jobs list | show | logs | cancel`` over a job's history, and ``--background`` queueing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import QUICKSTART
from typer.testing import CliRunner

from finetuneflow.cli import app
from finetuneflow.state import jobs as log
from finetuneflow.state import session_scope
from finetuneflow.state.repo import get_or_create_project

runner = CliRunner()


def ftf(*args: str) -> str:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_list_show_and_logs_read_a_foreground_job(tiny_model: Path) -> None:
    ftf("ingest", str(QUICKSTART / "data" / "qa.csv"), "-p", "c", "--model", str(tiny_model))
    listed = json.loads(ftf("jobs", "list", "--json"))
    assert [(j["id"], j["step"], j["status"]) for j in listed] == [(1, "ingest", "finished")]
    shown = json.loads(ftf("jobs", "show", "1"))
    assert shown["events"][0]["kind"] == "started" and shown["events"][-1]["kind"] == "finished"
    seqs = [e["seq"] for e in shown["events"]]
    page = json.loads(ftf("jobs", "show", "1", "--after", str(seqs[0]), "--limit", "2"))
    assert [e["seq"] for e in page["events"]] == seqs[1:3] and page["next_after"] == seqs[2]
    last = json.loads(ftf("jobs", "show", "1", "--after", str(seqs[-3]), "--limit", "5"))
    assert [e["seq"] for e in last["events"]] == seqs[-2:] and last["next_after"] is None
    lines = ftf("jobs", "logs", "1", "--follow").splitlines()  # done: prints all and returns
    assert len(lines) == len(shown["events"]) and "ingest:files 1/1" in ftf("jobs", "logs", "1")
    assert "already finished" in ftf("jobs", "cancel", "1")


@pytest.mark.parametrize(
    "command",
    [
        ["ingest", str(QUICKSTART / "data" / "qa.csv")],
        ["dataset", "build"],
        ["train", "--max-steps", "3"],
    ],
)
def test_background_queues_the_step_and_prints_the_job_id(
    command: list[str], ftf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ftf_home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("FTF_BROKER_URL", f"sqla+sqlite:///{ftf_home / 'broker.db'}")
    if command[0] != "ingest":
        with session_scope() as s:  # the other steps need an existing project
            get_or_create_project(s, "b")
    out = ftf(*command, "-p", "b", "--background")
    job_id = int(out.split()[1])
    job = log.get(job_id)
    assert (job["status"], job["queue"], job["params"]["project"]) == (
        "queued",
        "train" if command[0] == "train" else "default",
        "b",
    )
    if command[0] == "train":
        assert job["params"]["args"]["config"]["max_steps"] == 3 and job["params"]["args"]["run_id"]
    assert "cancelled" in ftf("jobs", "cancel", str(job_id))


def test_an_unknown_job_is_an_error_not_a_crash() -> None:
    result = runner.invoke(app, ["jobs", "show", "42"])
    assert result.exit_code == 2 and "no job 42" in result.output


def test_a_worker_on_another_broker_than_its_clients_says_so(
    ftf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ftf worker --broker X` alone serves X while the studio and `--background` send to
    $FTF_BROKER_URL (or the embedded broker): their jobs would wait forever without a word."""
    from finetuneflow.jobs import worker

    served: list[str] = []
    monkeypatch.setattr(worker, "run_worker", lambda cfg, queues, level: served.append(cfg.broker()) or 0)
    other = f"sqla+sqlite:///{ftf_home / 'other.db'}"
    monkeypatch.delenv("FTF_BROKER_URL", raising=False)
    said = runner.invoke(app, ["worker", "--broker", other])
    assert said.exit_code == 0 and served == [other]
    assert "warning" in said.stderr and "embedded SQLite broker" in said.stderr
    assert "FTF_BROKER_URL" in said.stderr
    assert other not in said.stderr  # a broker URL may hold a password
    monkeypatch.setenv("FTF_BROKER_URL", other)  # the clients' broker too: nothing to say
    quiet = runner.invoke(app, ["worker", "--broker", other])
    assert quiet.exit_code == 0 and served == [other, other] and "warning" not in quiet.stderr
    monkeypatch.setenv("FTF_BROKER_URL", f"sqla+sqlite:///{ftf_home / 'broker.db'}")
    assert "$FTF_BROKER_URL" in runner.invoke(app, ["worker", "--broker", other]).stderr
