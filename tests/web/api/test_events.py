"""A job's events as server-sent events: ``id:`` = seq, ``event:`` = kind, ``data:`` = JSON; a
client reconnecting with ``Last-Event-ID`` (or ``?after=``) gets exactly the events it missed, also
after the server process was killed and started again; keep-alives while the job is quiet; the
stream ends when the job is done."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from finetuneflow.state import jobs as log
from finetuneflow.state import session_scope
from finetuneflow.state.repo import get_or_create_project
from finetuneflow.web.sse import job_stream
from web.api.conftest import Server


def _job(project: str) -> int:
    """A queued job (no worker: the test writes its history) that has started running."""
    with session_scope() as s:
        pid = get_or_create_project(s, project).id
    job_id = log.create(pid, "ingest", {"project": project, "args": {}}, queue="default")  # seq 1
    log.append(job_id, "started", {"worker": "test"}, status="running")  # seq 2
    return job_id


def _progress(job_id: int, n: int) -> None:
    for i in range(n):
        log.append(job_id, "progress", {"done": i, "message": f"step {i}"}, progress=i / 10)


def _parse(lines: Iterable[str], stop_at: int | None = None) -> list[dict[str, Any]]:
    """SSE frames -> [{"id", "event", "data"}]; comments and ``retry:`` kept as {"comment"}.
    Stops after the event with id ``stop_at`` (the stream would go on)."""
    out: list[dict[str, Any]] = []
    frame: dict[str, Any] = {}
    for line in lines:
        if line.startswith(":"):
            out.append({"comment": line[1:].strip()})
        elif line.startswith(("id:", "event:", "data:")):
            key, _, value = line.partition(":")
            frame[key] = json.loads(value) if key == "data" else value.strip()
        elif not line and frame:
            out.append(frame)
            if stop_at is not None and frame.get("id") == str(stop_at):
                return out
            frame = {}
    return out


def _events(frames: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(int(f["id"]), f["event"]) for f in frames if "id" in f]


def test_each_event_is_an_sse_event_and_the_stream_ends_when_done(client: TestClient, project: str) -> None:
    job_id = _job(project)
    _progress(job_id, 2)
    log.append(job_id, "finished", {"result": {}}, status="finished")
    with client.stream("GET", f"/api/jobs/{job_id}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        frames = _parse(r.iter_lines())
    assert _events(frames) == [
        (1, "queued"),
        (2, "started"),
        (3, "progress"),
        (4, "progress"),
        (5, "finished"),
    ]
    third = next(f for f in frames if f.get("id") == "3")
    assert third["data"]["payload"] == {"done": 0, "message": "step 0"} and third["data"]["seq"] == 3


def _finished_events_url(project: str, progress: int) -> str:
    """The events URL of a job that queued, started, made ``progress`` steps and finished."""
    job_id = _job(project)
    _progress(job_id, progress)
    log.append(job_id, "finished", {}, status="finished")
    return f"/api/jobs/{job_id}/events"


def test_last_event_id_and_after_resume_exactly_after_the_seen_event(
    client: TestClient, project: str
) -> None:
    url = _finished_events_url(project, 3)
    with client.stream("GET", url, headers={"Last-Event-ID": "3"}) as r:
        assert [s for s, _ in _events(_parse(r.iter_lines()))] == [4, 5, 6]
    with client.stream("GET", url + "?after=5") as r:
        assert _events(_parse(r.iter_lines())) == [(6, "finished")]
    # an EventSource reconnects to the URL it opened (?after=0) sending Last-Event-ID: the header wins
    with client.stream("GET", url + "?after=0", headers={"Last-Event-ID": "4"}) as r:
        assert [s for s, _ in _events(_parse(r.iter_lines()))] == [5, 6]
    assert client.get(url + "?after=-1").status_code == 400
    assert client.get("/api/jobs/987654/events").status_code == 404


def test_a_seq_past_the_column_is_a_400_or_a_restart_never_a_broken_stream(
    client: TestClient, project: str
) -> None:
    """2**63 overflowed PostgreSQL's integer inside the stream (after its 200 was sent)."""
    url = _finished_events_url(project, 1)
    answer = client.get(url, params={"after": 2**63})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["message"].startswith("query.after:"), answer.text
    # a Last-Event-ID no seq can have is not a seq: the stream restarts from the first event
    with client.stream("GET", url, headers={"Last-Event-ID": str(2**63)}) as r:
        assert [s for s, _ in _events(_parse(r.iter_lines()))] == [1, 2, 3, 4]


def test_a_quiet_job_gets_keep_alives_then_its_end(database: str, project: str) -> None:
    job_id = _job(project)
    finisher = threading.Timer(1.5, lambda: log.append(job_id, "finished", {}, status="finished"))

    async def collect() -> list[str]:
        return [piece async for piece in job_stream(job_id, after=2, poll_s=0.1, keepalive_s=0.4)]

    finisher.start()
    pieces = asyncio.run(asyncio.wait_for(collect(), timeout=30))
    assert pieces[0].startswith("retry:") and pieces[-1].startswith("id: 3\nevent: finished\n")
    assert sum(p == ": keep-alive\n\n" for p in pieces) >= 2


def test_a_reconnect_after_the_server_restarted_gets_exactly_the_missed_events(
    server: Server, project: str
) -> None:
    job_id = _job(project)
    _progress(job_id, 2)  # seq 3, 4
    url = f"{server.url}/api/jobs/{job_id}/events"
    with httpx.stream("GET", url, timeout=30) as r:  # live: the job is still running
        seen = _events(_parse(r.iter_lines(), stop_at=4))
    assert [s for s, _ in seen] == [1, 2, 3, 4]

    server.kill()  # SIGKILL: nothing is flushed, nothing is said goodbye
    _progress(job_id, 2)  # seq 5, 6: written while no server runs
    server.start()
    log.append(job_id, "finished", {"result": {"ok": True}}, status="finished")  # seq 7

    with httpx.stream("GET", url, headers={"Last-Event-ID": "4"}, timeout=30) as r:
        missed = _events(_parse(r.iter_lines()))  # to its end: the job is done
    assert missed == [(5, "progress"), (6, "progress"), (7, "finished")]


def test_the_stream_of_a_job_whose_process_died_ends_with_lost(database: str, project: str) -> None:
    """A foreground step killed (its terminal closed) with no worker about: nothing else would
    ever mark it, so the stream's keep-alives reap it, and the stream ends."""
    from datetime import UTC, datetime, timedelta

    from finetuneflow.state import schema

    with session_scope() as s:
        pid = get_or_create_project(s, project).id
    job_id = log.create(pid, "train", {"project": project})  # a foreground job: running, beating
    with session_scope() as s:
        job = s.get(schema.Job, job_id)
        assert job is not None
        job.heartbeat_at = datetime.now(UTC) - timedelta(seconds=600)  # then its process died

    async def collect() -> list[str]:
        return [piece async for piece in job_stream(job_id, after=0, poll_s=0.05, keepalive_s=0.1)]

    pieces = asyncio.run(asyncio.wait_for(collect(), timeout=30))
    assert "event: lost" in pieces[-1] and log.get(job_id)["status"] == "failed"


def test_a_long_history_streams_a_page_at_a_time_all_of_it_in_order(
    client: TestClient, project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long run writes an event a step: the stream (and `ftf jobs logs --follow`) reads them a
    page at a time, never the whole history as one list, and misses none."""
    from finetuneflow.jobs import client as jobs_client

    monkeypatch.setattr(log, "EVENT_PAGE", 50)
    pages: list[int] = []
    real = log.events

    def paged(job_id: int, after: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        found = real(job_id, after, limit)
        pages.append(len(found))
        return found

    monkeypatch.setattr(log, "events", paged)
    url = _finished_events_url(project, 130)  # 133 events: queued, started, 130 steps, finished
    with client.stream("GET", url) as r:
        assert [s for s, _ in _events(_parse(r.iter_lines()))] == list(range(1, 134))
    assert max(pages) == 50 and sum(pages) == 133
    pages.clear()
    job_id = int(url.split("/")[3])
    assert [e["seq"] for e in jobs_client.follow(job_id, poll_s=0.01)] == list(range(1, 134))
    assert max(pages) == 50 and sum(pages) == 133
