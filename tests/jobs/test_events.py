"""The job event log on SQLite and on PostgreSQL: foreground steps write it, seqs are contiguous
per job even with racing writers, lost jobs are reaped, cancel stops a job."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import QUICKSTART

from finetuneflow import api, jobs
from finetuneflow.errors import JobCancelled
from finetuneflow.events import Emitter
from finetuneflow.ingest.config import IngestConfig
from finetuneflow.jobs import JobsConfig
from finetuneflow.state import jobs as log

FAST = JobsConfig(heartbeat_s=1, stale_after_s=3)


def _kinds(job_id: int) -> list[str]:
    return [e["kind"] for e in log.events(job_id)]


def test_a_foreground_step_leaves_its_whole_history(database: str, tiny_model: Path) -> None:
    project = f"ev-{uuid.uuid4().hex[:8]}"  # PostgreSQL outlives the test: a project of its own
    api.ingest([QUICKSTART / "data" / "qa.csv"], project, IngestConfig(tokenizer=str(tiny_model)))
    job = jobs.list_jobs(1)[0]
    history = jobs.show(job["id"])["events"]
    assert (job["step"], job["status"], job["result"]) == ("ingest", "finished", {"counts": {"ingested": 1}})
    assert [e["seq"] for e in history] == list(range(1, len(history) + 1))
    assert history[0]["kind"] == "started" and history[-1]["kind"] == "finished"
    assert any(e["kind"] == "progress" and e["payload"]["stage"] == "files" for e in history)
    assert log.events(job["id"], after=2) == history[2:]  # a replay from a Last-Event-ID


def test_a_failing_step_ends_failed_with_its_error(database: str) -> None:
    with pytest.raises(ValueError, match="boom"), log.tracked("x", None, {}, None):
        raise ValueError("boom")
    job = jobs.list_jobs(1)[0]
    assert (job["status"], job["error"]) == ("failed", "ValueError: boom")
    assert _kinds(job["id"]) == ["started", "failed"]


def test_racing_writers_get_distinct_contiguous_seqs(database: str) -> None:
    job_id = log.create(None, "x", {})
    threads = [
        threading.Thread(target=lambda: [log.append(job_id, "progress") for _ in range(5)]) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e["seq"] for e in log.events(job_id)] == list(range(1, 22))


def _set(job_id: int, **values: object) -> None:
    from finetuneflow.state import schema, session_scope

    with session_scope() as s:
        job = s.get(schema.Job, job_id)
        assert job is not None
        for key, value in values.items():
            setattr(job, key, value)


def _age(job_id: int, seconds: float) -> None:
    _set(job_id, heartbeat_at=datetime.now(UTC) - timedelta(seconds=seconds))


def test_a_running_job_whose_process_died_is_marked_lost(database: str) -> None:
    alive, dead = log.create(None, "x", {}), log.create(None, "x", {})
    _age(alive, 5)  # a foreground step beats every 10 s: not lost yet, though stale_after_s is 3
    _age(dead, 3 * log.HEARTBEAT_S + 1)  # its process stopped beating
    assert dead in jobs.reap(FAST) and alive not in jobs.reap(FAST)
    assert log.get(dead)["status"] == "failed" and "lost" in log.get(dead)["error"]
    assert _kinds(dead)[-1] == "lost" and log.get(alive)["status"] == "running"


def test_a_lost_training_job_fails_its_run_row_too(database: str) -> None:
    from finetuneflow.state import schema, session_scope
    from finetuneflow.state.repo import get_or_create_project

    project, run_id = f"lost-{uuid.uuid4().hex[:8]}", f"run-{uuid.uuid4().hex[:8]}"
    with session_scope() as s:
        pid = get_or_create_project(s, project).id
        s.add(schema.Run(id=run_id, project_id=pid, dataset="default", base_model="m", status="running",
                         path="runs/x", config={}))  # fmt: skip
    job_id = log.create(pid, "train", {"run_id": run_id, "dataset": "default", "resume": False})
    _age(job_id, 3 * log.HEARTBEAT_S + 1)
    assert job_id in jobs.reap(FAST)
    with session_scope() as s:
        run = s.get(schema.Run, run_id)
        assert run is not None and run.status == "failed" and "lost" in run.summary["error"]


def test_a_lost_queued_job_is_queued_again_until_its_attempts_run_out(
    database: str, ftf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ftf_home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("FTF_BROKER_URL", f"sqla+sqlite:///{ftf_home / 'broker.db'}")
    job_id = log.create(None, "train", {}, queue="train")
    log.append(job_id, "started", {}, status="running", attempts=1)
    _age(job_id, 10)
    jobs.reap(FAST)
    assert (log.get(job_id)["status"], _kinds(job_id)[-1]) == ("queued", "requeued")
    log.append(job_id, "started", {}, status="running", attempts=FAST.max_attempts)
    _age(job_id, 10)
    jobs.reap(FAST)
    assert (log.get(job_id)["status"], _kinds(job_id)[-1]) == ("failed", "lost")


def test_cancel_stops_a_running_step_at_its_next_event(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log, "CANCEL_CHECK_S", 0.0)
    with pytest.raises(JobCancelled), log.tracked("x", None, {}, None) as (sink, _done):
        emit = Emitter("x", sink)
        emit("work", 1, 10)
        job_id = jobs.list_jobs(1)[0]["id"]
        assert jobs.cancel(job_id) == "running"
        emit("work", 2, 10)
        pytest.fail("the step went on after it was cancelled")
    assert log.get(job_id)["status"] == "cancelled"
    assert _kinds(job_id)[-2:] == ["cancel", "cancelled"]
    assert jobs.cancel(job_id) == "cancelled"  # cancelling a finished job changes nothing


def test_a_queued_job_is_cancelled_at_once(database: str) -> None:
    job_id = log.create(None, "dataset", {}, queue="default")
    assert jobs.cancel(job_id) == "cancelled"
    assert _kinds(job_id) == ["queued", "cancel", "cancelled"]


def test_a_cancel_that_meets_a_worker_starting_the_job_leaves_it_to_stop_running(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the cancel read "queued", a worker then started the job, and the cancel wrote "cancelled"
    # over it: the studio showed cancelled while the worker ran on
    job_id = log.create(None, "dataset", {}, queue="default")
    read = log.get

    def then_started(job: int) -> dict[str, object]:
        seen = read(job)
        monkeypatch.setattr(log, "get", read)
        assert log.claim(job_id, 0, {"pid": 2})
        return seen

    monkeypatch.setattr(log, "get", then_started)
    assert jobs.cancel(job_id) == "running"
    job = log.get(job_id)
    assert (job["status"], job["cancel_requested"], job["attempts"]) == ("running", True, 1)
    assert _kinds(job_id) == ["queued", "started", "cancel"]


def test_a_delivery_of_a_job_whose_row_is_gone_is_skipped(database: str) -> None:
    from finetuneflow.jobs.app import run_job
    from finetuneflow.state import schema, session_scope

    job_id = log.create(None, "build", {"project": "p", "args": {}}, queue="default")
    with session_scope() as s:  # a database reset under a broker that kept its messages
        s.delete(s.get(schema.Job, job_id))
    assert run_job(job_id, FAST) == "skipped"  # dropped quietly, not a failed task


def test_a_delivery_that_cannot_read_its_job_is_retried_not_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database is unreachable when the worker takes the message: the task asks Celery to
    deliver it again later (an exception out of the task would ack it, and the job would stay
    queued forever); once retries run out, the error propagates."""
    from sqlalchemy.exc import OperationalError

    from finetuneflow.jobs.app import run_job

    monkeypatch.setenv("FTF_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")

    class Retry(Exception):
        pass

    class Task:  # what run_job reads of a bound Celery task
        class request:  # noqa: N801 - Celery's attribute name
            retries = 0

        def retry(self, countdown: float, max_retries: int) -> Exception:
            return Retry(countdown)

    with pytest.raises(Retry):
        run_job(1, FAST, Task())  # type: ignore[arg-type]
    Task.request.retries = FAST.max_retries
    with pytest.raises(OperationalError):
        run_job(1, FAST, Task())  # type: ignore[arg-type]


def test_a_heartbeat_that_cannot_be_written_once_beats_on(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    job_id = log.create(None, "dataset", {})
    written = log._beat
    failures: list[int] = []

    def locked_once(job: int, attempt: int | None) -> None:
        if not failures:
            failures.append(job)
            raise RuntimeError("database is locked")
        written(job, attempt)

    with log.heartbeat(job_id, 0.05):
        monkeypatch.setattr(log, "_beat", locked_once)
        first = log.get(job_id)["heartbeat_at"]
        time.sleep(0.5)
    assert failures == [job_id] and log.get(job_id)["heartbeat_at"] > first  # the thread lived on


def test_of_two_deliveries_of_one_job_exactly_one_claims_it(database: str) -> None:
    # the claim used to be a read then a write: two workers (or two reapers' sends) both ran the job
    job_id = log.create(None, "dataset", {}, queue="default")
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda n=n: results.append(log.claim(job_id, 0, {"pid": n})))
        for n in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert (log.get(job_id)["status"], log.get(job_id)["attempts"]) == ("running", 1)
    assert _kinds(job_id) == ["queued", "started"]
    assert not log.claim(job_id, 0, {})  # a late delivery that read attempts 0


def test_a_stale_job_is_requeued_once_however_many_reapers_see_it(database: str) -> None:
    job_id = log.create(None, "dataset", {}, queue="default")
    assert log.claim(job_id, 0, {})
    assert log.requeue(job_id, 1, "no heartbeat") and not log.requeue(job_id, 1, "no heartbeat")
    assert log.claim(job_id, 1, {}) and not log.requeue(job_id, 1, "a reaper that read attempt 1")
    assert _kinds(job_id) == ["queued", "started", "requeued", "started"]


def test_a_job_that_beat_again_after_the_reaper_looked_is_neither_requeued_nor_lost(database: str) -> None:
    # the reaper reads the stale jobs, then moves each: a beat landing in between used to be ignored
    job_id = log.create(None, "dataset", {}, queue="default")
    assert log.claim(job_id, 0, {})
    _age(job_id, 100)
    assert job_id in {j["id"] for j in log.stale(50)}  # what the reaper read
    log._beat(job_id, 1)  # the worker was only slow
    assert not log.requeue(job_id, 1, "no heartbeat", stale_s=50)
    assert not log.mark_lost(job_id, 50, attempts=1)
    assert (log.get(job_id)["status"], _kinds(job_id)) == ("running", ["queued", "started"])
    _age(job_id, 100)  # silent for good this time
    assert log.requeue(job_id, 1, "no heartbeat", stale_s=50)
    assert log.claim(job_id, 1, {})
    _age(job_id, 100)
    assert log.mark_lost(job_id, 50, attempts=2)
    assert log.get(job_id)["status"] == "failed" and _kinds(job_id)[-1] == "lost"


def test_a_claim_and_its_started_event_are_one_write(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # the status used to be committed before the event: a kill between them left a running job
    # with no ``started`` in its log
    job_id = log.create(None, "dataset", {}, queue="default")

    def killed(*args: object) -> int:
        raise RuntimeError("the process died between the update and the event")

    real = log._add_event
    monkeypatch.setattr(log, "_add_event", killed)
    with pytest.raises(RuntimeError, match="died between"):
        log.claim(job_id, 0, {})
    monkeypatch.setattr(log, "_add_event", real)  # (undo() would also undo the database fixture's)
    assert (log.get(job_id)["status"], log.get(job_id)["attempts"]) == ("queued", 0)
    assert log.claim(job_id, 0, {}) and _kinds(job_id) == ["queued", "started"]


def test_a_dead_job_that_beats_again_still_holds_its_project(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from finetuneflow.api import _aside
    from finetuneflow.state import session_scope
    from finetuneflow.state.repo import get_or_create_project

    with session_scope() as s:
        project = get_or_create_project(s, f"held-{uuid.uuid4().hex[:8]}").id
    job_id = log.create(project, "dataset", {}, queue="default")
    assert log.claim(job_id, 0, {})
    _age(job_id, _aside.LIVE_HEARTBEAT_S + 60)
    real = log.mark_lost

    def beat_first(job: int, timeout_s: float, attempts: int) -> bool:
        log._beat(job, attempts)  # its beat lands between the read and the mark
        return real(job, timeout_s, attempts)

    monkeypatch.setattr(log, "mark_lost", beat_first)  # _aside's ``jobs`` is this module
    with pytest.raises(RuntimeError, match=f"in use by job {job_id}"):
        _aside.refuse_if_used(project, "the project", RuntimeError)
    assert log.get(job_id)["status"] == "running"


def test_an_attempt_that_lost_its_job_stops_at_its_next_event_and_stops_beating(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a worker paused past its heartbeat (SIGSTOP, a suspended laptop) came back and trained on
    # beside the attempt that had been started in its place
    from finetuneflow.errors import JobSuperseded

    monkeypatch.setattr(log, "CANCEL_CHECK_S", 0.0)
    job_id = log.create(None, "dataset", {}, queue="default")
    assert log.claim(job_id, 0, {})
    attempt = log.attached(job_id, 60, attempt=1)
    with pytest.raises(JobSuperseded), attempt, log.tracked("dataset", None, {}, None) as (sink, _done):
        emit = Emitter("dataset", sink)
        emit("work", 1, 10)
        assert log.requeue(job_id, 1, "no heartbeat") and log.claim(job_id, 1, {})
        _age(job_id, 100)
        emit("work", 2, 10)
        pytest.fail("the superseded attempt went on")
    log._beat(job_id, 1)  # the old attempt's heart no longer counts for the job
    assert (log.get(job_id)["status"], log.get(job_id)["attempts"]) == ("running", 2)
    assert job_id in {j["id"] for j in log.stale(50)}


@pytest.mark.parametrize(
    ("kind", "retried"), [("auth", False), ("not_found", False), ("timeout", True), ("rate_limit", True)]
)
def test_only_a_providers_passing_failures_are_retried_and_the_last_attempt_keeps_its_error(
    database: str, monkeypatch: pytest.MonkeyPatch, kind: str, retried: bool
) -> None:
    # every ProviderError used to be retried (a missing key file three times over), and the job
    # then failed as "started 3 times and never finished (max_attempts)", its reason gone
    from finetuneflow.errors import ProviderError
    from finetuneflow.jobs.app import run_job
    from finetuneflow.jobs.runners import RUNNERS

    def failing(project: str, args: dict[str, object]) -> None:
        raise ProviderError(f"the provider said no ({kind})", kind)  # type: ignore[arg-type]

    class Retry(Exception):
        pass

    class Task:
        class request:  # noqa: N801 - Celery's attribute name
            retries = 0

        def retry(self, countdown: float, max_retries: int) -> Exception:
            return Retry(countdown)

    monkeypatch.setitem(RUNNERS, "flaky", failing)
    job_id = log.create(None, "flaky", {"project": "p", "args": {}}, queue="default")
    for attempt in range(1, FAST.max_attempts + 1):
        if not retried or attempt == FAST.max_attempts:
            assert run_job(job_id, FAST, Task()) == "failed"  # type: ignore[arg-type]
            break
        with pytest.raises(Retry):
            run_job(job_id, FAST, Task())  # type: ignore[arg-type]
        Task.request.retries += 1
    job = log.get(job_id)
    assert job["status"] == "failed" and job["error"] == f"ProviderError: the provider said no ({kind})"
    assert _kinds(job_id).count("retry") == (FAST.max_attempts - 1 if retried else 0)


def test_a_superseded_attempt_never_ends_retries_or_cancels_the_job(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an attempt that returned (or failed) before its next cancel check wrote "finished" or
    # "queued" over the job the newer attempt was running: a retry then started a third attempt
    from finetuneflow.jobs.app import run_job
    from finetuneflow.jobs.runners import RUNNERS

    job_id = log.create(None, "slow", {"project": "p", "args": {}}, queue="default")
    outcome: dict[str, BaseException | None] = {"raise": None}

    def overtaken(project: str, args: dict[str, object]) -> dict[str, int]:
        assert log.requeue(job_id, 1, "no heartbeat") and log.claim(job_id, 1, {"pid": 2})
        if outcome["raise"] is not None:
            raise outcome["raise"]
        return {"steps": 1}

    monkeypatch.setitem(RUNNERS, "slow", overtaken)
    assert run_job(job_id, FAST) == "skipped"
    assert (log.get(job_id)["status"], log.get(job_id)["attempts"]) == ("running", 2)
    for err in (ValueError("boom"), JobCancelled("stop")):
        _set(job_id, status="queued", attempts=0)
        outcome["raise"] = err
        assert run_job(job_id, FAST) == "skipped"
        assert (log.get(job_id)["status"], log.get(job_id)["attempts"]) == ("running", 2)
    assert not {"finished", "failed", "cancelled", "result"} & set(_kinds(job_id))


def test_a_cancelled_job_whose_process_died_ends_cancelled_not_sent_again(
    database: str, ftf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancel pressed after the worker died: the reaper used to send the job again (training
    reloaded and resumed) and it ended 'lost', not cancelled."""
    ftf_home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("FTF_BROKER_URL", f"sqla+sqlite:///{ftf_home / 'broker.db'}")
    job_id = log.create(None, "train", {}, queue="train")
    log.append(job_id, "started", {}, status="running", attempts=1)
    assert jobs.cancel(job_id) == "running"  # its worker has not seen the request: it is dead
    _age(job_id, 10)
    assert job_id in jobs.reap(FAST)
    assert log.get(job_id)["status"] == "cancelled" and _kinds(job_id)[-2:] == ["cancel", "cancelled"]
    assert "requeued" not in _kinds(job_id)


def test_a_delivery_of_a_job_asked_to_stop_does_not_start_it(database: str) -> None:
    from finetuneflow.jobs.app import run_job

    job_id = log.create(None, "build", {"project": "p", "args": {}}, queue="default")
    log.append(job_id, "started", {}, status="running", attempts=1)
    jobs.cancel(job_id)
    _age(job_id, 10)  # its worker died; the broker delivers the job again (Redis's visibility timeout)
    assert run_job(job_id, FAST) == "cancelled"
    assert log.get(job_id)["status"] == "cancelled" and "started" not in _kinds(job_id)[-2:]


def test_a_job_the_broker_does_not_take_fails_saying_so_and_is_not_left_queued(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from finetuneflow.errors import QueueUnavailable

    monkeypatch.setenv("FTF_BROKER_URL", "redis://:s3cret-pw@127.0.0.1:1/0")  # nothing listens there
    project = f"q-{uuid.uuid4().hex[:8]}"
    with pytest.raises(QueueUnavailable, match="could not be queued") as caught:
        jobs.submit("ingest", project, {"paths": []})
    job = next(j for j in log.listed(1000) if j["params"].get("project") == project)
    assert job["status"] == "failed" and "the job queue did not take it" in job["error"]
    assert "s3cret" not in str(caught.value) and "s3cret" not in job["error"]


def test_a_progress_event_the_database_cannot_take_is_skipped_not_fatal(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    real_append = log.append

    def locked(job_id: int, kind: str, *args: object, **kwargs: object) -> int:
        if kind == "progress":  # SQLite's busy timeout ran out under another writer
            raise OperationalError("UPDATE jobs", {}, Exception("database is locked"))
        return real_append(job_id, kind, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(log, "append", locked)
    with log.tracked("x", None, {}, None) as (sink, done):
        Emitter("x", sink)("work", 1, 2, message="half way")  # used to end the step (and a training run)
        done({"ok": True})
    job_id = max(j["id"] for j in log.listed(50) if j["step"] == "x")
    assert log.get(job_id)["status"] == "finished"


def test_a_reaper_leaves_a_job_to_the_slower_beat_its_worker_was_started_with(
    database: str, ftf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The studio reaps with the default settings (60 s); a worker started with --heartbeat 90
    --stale-after 300 beats every 90 s, so 100 s of silence is not a lost job there (it used to
    be sent again, and the work restarted beside the running one)."""
    ftf_home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("FTF_BROKER_URL", f"sqla+sqlite:///{ftf_home / 'broker.db'}")
    job_id = log.create(None, "train", {}, queue="train")
    assert log.claim(job_id, 0, {"worker": "elsewhere", "pid": 1, "attempt": 1, "heartbeat_s": 90.0,
                                 "stale_after_s": 300.0})  # fmt: skip
    _age(job_id, 100)
    assert job_id not in jobs.reap(JobsConfig())
    assert log.get(job_id)["status"] == "running"
    _age(job_id, 301)
    assert job_id in jobs.reap(JobsConfig())
    assert (log.get(job_id)["status"], _kinds(job_id)[-1]) == ("queued", "requeued")
