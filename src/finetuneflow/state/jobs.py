"""Jobs as an append-only event log: every step invocation is a ``jobs`` row (its summary) and
``job_events`` rows (its history: queued, started, progress with log lines and metrics, result,
finished / failed / cancelled / lost), so any client can list jobs and replay one from a ``seq``.

The CLI and API wrap every step in :func:`tracked`. A worker (``finetuneflow.jobs``) creates the
row when the job is queued and runs the same API function inside :func:`attached`: ``tracked``
then writes into that job instead of starting one, and the worker says how it ended.

Whoever runs a job beats its heart (:func:`heartbeat`); :func:`stale` finds running jobs whose
beat stopped (their process was killed) so they are marked or re-queued, never left running.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from finetuneflow.errors import JobCancelled, JobSuperseded
from finetuneflow.events import Event, EventSink
from finetuneflow.state import schema, session_scope

T = TypeVar("T")
_log = logging.getLogger("finetuneflow.jobs")

MIN_UPDATE_S = 2.0  # progress without a message or metrics: at most this often into the log
CANCEL_CHECK_S = 1.0  # how often a running step looks for a cancel request
HEARTBEAT_S = 10.0  # foreground jobs; a worker passes its own setting
DONE = ("finished", "failed", "cancelled")

_attached: ContextVar[int | None] = ContextVar("ftf_job", default=None)
_attempt: ContextVar[int | None] = ContextVar("ftf_job_attempt", default=None)  # a worker's, when attached
Summary = dict[str, Any]  # a job's row as :func:`summary` gives it


def create(project_id: int | None, step: str, params: dict[str, Any], queue: str | None = None) -> int:
    """A new job row, ``queued`` when it has a ``queue`` (else ``running`` in this process); its id."""
    status = "queued" if queue else "running"
    with session_scope() as s:
        job = schema.Job(project_id=project_id, step=step, status=status, params=params, queue=queue,
                         attempts=0 if queue else 1, heartbeat_at=None if queue else _now())  # fmt: skip
        s.add(job)
        s.flush()
        job_id = job.id
    append(job_id, "queued" if queue else "started", {"step": step, "params": params})
    return job_id


def append(
    job_id: int, kind: str, payload: dict[str, Any] | None = None, owner: int | None = None, **row: Any
) -> int:
    """Add an event to a job's log and set ``row`` fields of its summary, in one transaction;
    returns the event's ``seq``. Writers of one job queue on its row's lock (PostgreSQL; SQLite
    has one writer at a time); should two still race for a seq, the loser takes the next one.
    With ``owner`` (a worker's attempt), nothing is written (0) once another attempt holds the job:
    a superseded attempt must not end, retry or cancel the job the new one runs."""

    def write(s: Any) -> int:
        job = s.get(schema.Job, job_id, with_for_update=True)
        if job is not None and owner is not None and job.attempts != owner:
            return 0
        seq = _add_event(s, job_id, kind, payload)
        if job is not None:
            for key, value in row.items():
                setattr(job, key, value)
            job.updated_at = _now()
        return seq

    return _retried(job_id, kind, write)


def _retried(job_id: int, kind: str, write: Callable[[Any], T]) -> T:
    """``write(session)`` in one transaction, run again whole (up to ten times) when another
    writer took the event's seq meanwhile (the loser takes the next one)."""
    for attempt in range(10):
        try:
            with session_scope() as s:
                return write(s)
        except IntegrityError:
            time.sleep(0.01 * (attempt + 1))
    raise RuntimeError(f"job {job_id}: could not log {kind!r} (ten seq conflicts)")


def claim(job_id: int, attempts: int, where: dict[str, Any]) -> bool:
    """Start attempt ``attempts + 1`` of a queued (or dead running) job, if no other process
    started one since its ``attempts`` were read: one conditional UPDATE, atomic on SQLite and
    PostgreSQL, so of two deliveries of one job exactly one runs it. Logs ``started``."""
    return _moved(job_id, attempts, ("queued", "running"), "started", where,
                  status="running", attempts=attempts + 1, heartbeat_at=_now())  # fmt: skip


def cancel_unstarted(job_id: int, attempts: int) -> bool:
    """End a job that was asked to stop and is not running anywhere (a delivery found it so, or
    a reaper did) as ``cancelled``, while attempt ``attempts`` still holds it; whether it did."""
    return _moved(job_id, attempts, ("queued", "running"), "cancelled", {}, status="cancelled")


def unqueue(job_id: int, attempts: int, reason: str) -> bool:
    """Undo the ``queued`` of a job whose message the broker did not take (refused, or down):
    a new job (``attempts`` 0) fails with ``reason``; one a reaper was sending again goes back to
    ``running`` with its dead process's heartbeat, so the next reap tries again. Whether it did.
    Left ``queued`` with no message in the broker, a job would wait forever and count as live
    (its project could not be deleted)."""
    error = f"the job queue did not take it: {reason}"
    if attempts == 0:
        return _moved(job_id, 0, ("queued",), "failed", {"error": error}, status="failed", error=error)
    return _moved(job_id, attempts, ("queued",), "requeue_failed", {"error": error}, status="running")


def requeue(job_id: int, attempts: int, reason: str, stale_s: float | None = None) -> bool:
    """Mark a running job ``queued`` again, if its attempt ``attempts`` still holds it (a second
    reaper, or a delivery that started it meanwhile, wins nothing twice) and, given ``stale_s``,
    its heartbeat is still that old (one that beat since the reaper looked keeps its job). Logs
    ``requeued``."""
    return _moved(job_id, attempts, ("running",), "requeued", {"reason": reason}, stale_s, status="queued")


def _moved(job_id: int, seen: int, statuses: tuple[str, ...], kind: str, payload: dict[str, Any],
           stale_s: float | None = None, **values: Any) -> bool:  # fmt: skip
    """Set ``values`` on the job if it still has ``seen`` attempts and one of ``statuses`` (and,
    given ``stale_s``, no heartbeat for that long), and log ``kind`` in the same transaction (a
    kill between the two left a started job without its ``started``); whether it did."""
    table: Any = schema.Job.__table__
    where = (table.c.id == job_id) & (table.c.attempts == seen) & table.c.status.in_(statuses)
    if stale_s is not None:
        cutoff = _now() - timedelta(seconds=stale_s)
        where = where & (func.coalesce(table.c.heartbeat_at, table.c.updated_at) < cutoff)

    def write(s: Any) -> bool:  # the UPDATE locks the row: appends to this job wait for it
        done: Any = s.execute(update(table).where(where).values(updated_at=_now(), **values))
        if done.rowcount != 1:
            return False
        _add_event(s, job_id, kind, payload)
        return True

    return _retried(job_id, kind, write)


def _add_event(s: Any, job_id: int, kind: str, payload: dict[str, Any] | None) -> int:
    """Add the job's next event in session ``s``; its ``seq``."""
    seq = (s.scalar(select(func.max(schema.JobEvent.seq)).where(schema.JobEvent.job_id == job_id)) or 0) + 1
    s.add(schema.JobEvent(job_id=job_id, seq=seq, kind=kind, payload=payload or {}))
    return int(seq)


EVENT_PAGE = 500  # events a follower reads at once: a long run's history is tens of thousands


def events(job_id: int, after: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
    """A job's events with ``seq`` > ``after``, oldest first, as plain dicts; the first ``limit``
    of them when given."""
    with session_scope() as s:
        rows = s.scalars(
            select(schema.JobEvent)
            .where(schema.JobEvent.job_id == job_id, schema.JobEvent.seq > after)
            .order_by(schema.JobEvent.seq)
            .limit(limit)
        ).all()
        return [{"seq": e.seq, "at": e.at.isoformat(), "kind": e.kind, "payload": e.payload} for e in rows]


def get(job_id: int) -> dict[str, Any]:
    """A job's summary as a plain dict. Raises LookupError when there is none."""
    with session_scope() as s:
        job = s.get(schema.Job, job_id)
        if job is None:
            raise LookupError(f"no job {job_id}; `ftf jobs list` shows them")
        return summary(job)


def listed(limit: int = 50, status: str | None = None) -> list[dict[str, Any]]:
    """The newest ``limit`` jobs (of one ``status`` if given), newest first."""
    with session_scope() as s:
        query = select(schema.Job).order_by(schema.Job.id.desc()).limit(limit)
        if status:
            query = query.where(schema.Job.status == status)
        return [summary(j) for j in s.scalars(query)]


def summary(job: schema.Job) -> dict[str, Any]:
    names = ("id", "project_id", "step", "status", "progress", "message", "params", "result", "error",
             "queue", "attempts", "cancel_requested")  # fmt: skip
    out = {n: getattr(job, n) for n in names}
    for n in ("created_at", "updated_at", "heartbeat_at"):
        value = getattr(job, n)
        out[n] = value.isoformat() if value else None
    return out


def request_cancel(job_id: int) -> str:
    """Ask a job to stop: a queued one is cancelled now, a running one stops at its next progress
    event. Returns the job's status after the request. Raises LookupError for an unknown job."""
    job = get(job_id)
    if job["status"] in DONE:
        return str(job["status"])
    append(job_id, "cancel", {}, cancel_requested=True)
    # only while no worker has started it since it was read: one that did sees the request at
    # its next progress event (written unconditionally, "cancelled" hid a job still running)
    if job["status"] == "queued" and _moved(job_id, job["attempts"], ("queued",), "cancelled", {},
                                            status="cancelled"):  # fmt: skip
        return "cancelled"
    return str(get(job_id)["status"])


def stale(timeout_s: float) -> list[dict[str, Any]]:
    """Running jobs whose heartbeat is older than ``timeout_s`` (their process is gone)."""
    cutoff = _now() - timedelta(seconds=timeout_s)
    with session_scope() as s:
        rows = s.scalars(select(schema.Job).where(schema.Job.status == "running")).all()
        return [summary(j) for j in rows if _aware(j.heartbeat_at or j.updated_at) < cutoff]


def silent_s(job: Summary) -> float:
    """Seconds since ``job`` (a summary) last beat, or was last written."""
    last = job["heartbeat_at"] or job["updated_at"]
    return (_now() - _aware(datetime.fromisoformat(last))).total_seconds()


def started_with(job_id: int) -> dict[str, Any]:
    """What the job's newest ``started`` event recorded (a worker's host, pid, attempt and beat
    settings); empty if it never started."""
    with session_scope() as s:
        payload = s.scalar(
            select(schema.JobEvent.payload)
            .where(schema.JobEvent.job_id == job_id, schema.JobEvent.kind == "started")
            .order_by(schema.JobEvent.seq.desc())
            .limit(1)
        )
    return dict(payload or {})


def allowed_silence(job: Summary, stale_after_s: float) -> float:
    """Seconds a running job may go without a heartbeat before a reaper whose setting is
    ``stale_after_s`` counts it lost: that, or longer where the job's own process beats slower: a
    foreground step every ``HEARTBEAT_S``, a worker's job by the settings its worker recorded when
    it started it (the studio reaps with the defaults; a worker started with ``--heartbeat 90``
    must keep its jobs)."""
    if not job["queue"]:
        return max(stale_after_s, 3 * HEARTBEAT_S)
    own = started_with(int(job["id"]))
    return max(stale_after_s, float(own.get("stale_after_s", 0)), 3 * float(own.get("heartbeat_s", 0)))


def mark_lost(job_id: int, timeout_s: float, attempts: int) -> bool:
    """Fail a stale job: its process stopped beating ``timeout_s`` ago. Only while attempt
    ``attempts`` still holds it and it is still that silent (a job that beat again since it was
    read stays running); whether it was failed. A training job's run row (still ``running``:
    nobody else will end it) fails with it; ``ftf train --resume`` reopens it. A job that was
    asked to stop ends ``cancelled`` instead: its process died before it could see the request,
    and sending it again would undo the cancel."""
    error = f"lost: no heartbeat for {timeout_s:g} s (its process was killed or its machine is gone)"
    job = get(job_id)
    if job["cancel_requested"]:
        ended = _moved(job_id, attempts, ("running",), "cancelled", {"reason": error}, timeout_s,
                       status="cancelled")  # fmt: skip
    else:
        ended = _moved(job_id, attempts, ("running",), "lost", {"error": error}, timeout_s,
                       status="failed", error=error)  # fmt: skip
    if not ended:
        return False
    run_id = run_of(job["params"])  # parameters never change
    if run_id:
        with session_scope() as s:
            run = s.get(schema.Run, run_id)
            if run is not None and run.status == "running":
                run.status, run.summary = "failed", {"error": error, "resumable": True}
    return True


def run_of(params: dict[str, Any] | None) -> str | None:
    """The run a job's parameters name: the CLI's ``run_id``, or the queued step's ``args``'."""
    params = params or {}
    return params.get("run_id") or (params.get("args") or {}).get("run_id")


def unfinished(
    project_id: int, live_s: float, run_id: str | None = None
) -> tuple[list[Summary], list[Summary]]:
    """The project's unfinished jobs (those that name run ``run_id``, when given), as (live, dead):
    queued ones and running ones whose heartbeat is within ``live_s`` seconds are live; a running
    one with an older heartbeat is dead (its process is gone, though a reaper may still send it
    again)."""
    cutoff = _now() - timedelta(seconds=live_s)
    live: list[Summary] = []
    dead: list[Summary] = []
    with session_scope() as s:
        active = schema.Job.status.in_(("queued", "running"))
        rows = s.scalars(select(schema.Job).where(schema.Job.project_id == project_id, active)).all()
        for job in rows:
            if run_id is None or run_of(job.params) == run_id:
                gone = job.status == "running" and _aware(job.heartbeat_at or job.updated_at) < cutoff
                (dead if gone else live).append(summary(job))
    return live, dead


@contextmanager
def attached(job_id: int, heartbeat_s: float = HEARTBEAT_S, attempt: int | None = None) -> Iterator[None]:
    """Run the body as job ``job_id`` (queued earlier): ``tracked`` writes into it. Beats its heart.
    With the ``attempt`` this process claimed, the body stops (JobSuperseded) once another attempt
    holds the job, and this one's heart no longer beats for it."""
    token, attempt_token = _attached.set(job_id), _attempt.set(attempt)
    try:
        with heartbeat(job_id, heartbeat_s, attempt):
            yield
    finally:
        _attached.reset(token)
        _attempt.reset(attempt_token)


@contextmanager
def heartbeat(job_id: int, every_s: float, attempt: int | None = None) -> Iterator[None]:
    """Set the job's ``heartbeat_at`` every ``every_s`` seconds while the body runs (a thread);
    given an ``attempt``, only while that attempt holds the job."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                _beat(job_id, attempt)
            except Exception as err:  # a locked or unreachable database: beat again next time, or
                # the thread dies here and the reaper takes a healthy job for lost
                _log.warning("job %s: heartbeat not written (%s); trying again in %g s", job_id, err, every_s)

    _beat(job_id, attempt)
    thread = threading.Thread(target=beat, name=f"ftf-job-{job_id}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=every_s + 5)


@contextmanager
def tracked(
    step: str, project_id: int | None, params: dict[str, Any], on_event: EventSink | None
) -> Iterator[tuple[EventSink, Callable[[dict[str, Any]], None]]]:
    """Yields (event sink, set_result). Outside a worker: a new job, marked failed with the error
    text if the body raises, finished with the result otherwise. Inside :func:`attached`: the
    events go to the worker's job, which the worker finishes. The sink raises JobCancelled once
    the job was asked to stop."""
    outer = _attached.get()
    job_id = outer if outer is not None else create(project_id, step, params)
    result: dict[str, Any] = {}
    sink = _sink(job_id, on_event, _attempt.get() if outer is not None else None)
    if outer is not None:
        yield sink, result.update
        append(job_id, "result", {"step": step, "result": result}, owner=_attempt.get())
        return
    with heartbeat(job_id, HEARTBEAT_S):
        try:
            yield sink, result.update
        except JobCancelled:
            append(job_id, "cancelled", {}, status="cancelled")
            raise
        except BaseException as err:
            error = f"{type(err).__name__}: {err}"
            append(job_id, "failed", {"error": error}, status="failed", error=error)
            raise
    append(job_id, "finished", {"result": result}, status="finished", progress=1.0, result=result)


def _sink(job_id: int, on_event: EventSink | None, attempt: int | None = None) -> EventSink:
    """Events into the job's log: every one with a message or metrics, bare progress at most every
    MIN_UPDATE_S. Looks for a cancel request (and, for a worker's ``attempt``, for a newer attempt)
    at most every CANCEL_CHECK_S."""
    last = {"progress": 0.0, "cancel": time.monotonic()}

    def sink(event: Event) -> None:
        if on_event:
            on_event(event)
        now = time.monotonic()
        fraction = float(event.done) / float(event.total) if event.total else None
        if event.message or event.metrics or now - last["progress"] > MIN_UPDATE_S:
            last["progress"] = now
            row: dict[str, Any] = {"message": event.message or event.stage}
            if fraction is not None:
                row["progress"] = fraction
            payload = {"step": event.step, "stage": event.stage, "done": event.done, "total": event.total,
                       "message": event.message, "metrics": _plain(event.metrics)}  # fmt: skip
            try:
                append(job_id, "progress", payload, attempt, **row)  # none from a superseded attempt
            except OperationalError:  # the database stayed locked: progress may skip, the work not
                _log.debug("job %s: a progress event was dropped (database busy)", job_id, exc_info=True)
        if now - last["cancel"] > CANCEL_CHECK_S:
            last["cancel"] = now
            _check_stop(job_id, attempt)

    return sink


def _check_stop(job_id: int, attempt: int | None) -> None:
    """Raise JobCancelled when the job was asked to stop, JobSuperseded when another attempt
    than ``attempt`` (when given) holds it."""
    with session_scope() as s:
        row = s.execute(
            select(schema.Job.cancel_requested, schema.Job.attempts).where(schema.Job.id == job_id)
        ).first()
    if row is not None and attempt is not None and row.attempts != attempt:
        raise JobSuperseded(f"job {job_id}: attempt {row.attempts} started while attempt {attempt} ran")
    if row is not None and row.cancel_requested:
        raise JobCancelled(f"job {job_id} was cancelled")


def _beat(job_id: int, attempt: int | None) -> None:
    table: Any = schema.Job.__table__
    where = table.c.id == job_id
    if attempt is not None:
        where = where & (table.c.attempts == attempt)
    with session_scope() as s:
        s.execute(update(table).where(where).values(heartbeat_at=_now()))


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics as JSON numbers and strings (tensors and numpy scalars become floats)."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, bool | int | float | str) or value is None:
            out[key] = value
        else:
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                out[key] = str(value)
    return out


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    """SQLite hands timestamps back without a zone; they were written in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
