"""``ftf worker`` and ``ftf jobs list | show | logs | cancel``: run queued steps, and watch them."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from finetuneflow.cli.common import Command, ConfigFile, console, fail, opt, settings

jobs_app = typer.Typer(help="List queued and past jobs, read their logs, cancel them.", no_args_is_help=True)
JobId = Annotated[int, typer.Argument(help="Job id (`ftf jobs list` shows them).")]


def register(app: typer.Typer) -> None:
    """Add ``worker`` and the ``jobs`` group to ``app``."""
    app.command("worker", cls=Command)(worker)
    app.add_typer(jobs_app, name="jobs")


def worker(
    queues: Annotated[
        str, typer.Option("--queues", "-Q", help="Comma-separated queues to take jobs from: default, train.")
    ] = "default,train",
    broker: Annotated[str | None, opt("jobs", "broker_url", "--broker")] = None,
    concurrency: Annotated[int | None, opt("jobs", "concurrency")] = None,
    heartbeat: Annotated[float | None, opt("jobs", "heartbeat_s", "--heartbeat")] = None,
    stale_after: Annotated[float | None, opt("jobs", "stale_after_s", "--stale-after")] = None,
    loglevel: Annotated[str, typer.Option(help="Celery's log level.")] = "INFO",
    config: ConfigFile = None,
) -> None:
    """Run queued jobs in the foreground until Ctrl-C (one process per queue; train one at a time)."""
    from finetuneflow.jobs.config import JobsConfig
    from finetuneflow.jobs.worker import run_worker

    try:
        cfg = settings(JobsConfig, config, broker_url=broker, concurrency=concurrency, heartbeat_s=heartbeat,
                       stale_after_s=stale_after)  # fmt: skip
        _warn_other_broker(cfg)
        code = run_worker(cfg, [q.strip() for q in queues.split(",") if q.strip()], loglevel)
    except ValueError as err:
        fail(err)
    raise typer.Exit(code)


def _warn_other_broker(cfg: Any) -> None:
    """Say so when this worker's broker is not the one clients send to: the studio and
    ``--background`` read ``$FTF_BROKER_URL`` only, so their jobs would wait forever unseen."""
    from finetuneflow.jobs.config import BROKER_ENV, JobsConfig

    if cfg.broker() == JobsConfig().broker():
        return
    theirs = (
        f"${BROKER_ENV}"
        if os.environ.get(BROKER_ENV)
        else f"the embedded SQLite broker (${BROKER_ENV} unset)"
    )
    typer.echo(
        f"warning: this worker takes jobs from the broker set by --broker or the config file, but the studio "
        f"and `--background` send theirs to {theirs}: set {BROKER_ENV} to the same URL where they run, "
        "or their jobs stay queued with no worker",
        err=True,
    )


@jobs_app.command("list")
def jobs_list(
    limit: Annotated[int, typer.Option(help="Show this many, newest first.")] = 20,
    status: Annotated[
        str | None, typer.Option(help="Only queued, running, finished, failed or cancelled.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Jobs from every client (foreground steps too); running ones whose worker is gone are reaped."""
    from finetuneflow import jobs

    found = jobs.list_jobs(limit, status)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    table = Table("id", "step", "status", "progress", "message", "attempts", "updated")
    for job in found:
        table.add_row(str(job["id"]), job["step"], _status(job["status"]), f"{job['progress']:.0%}",
                      escape(job["message"][:60]), str(job["attempts"]), job["updated_at"][:19])  # fmt: skip
    console.print(table)


@jobs_app.command("show")
def jobs_show(
    job_id: JobId,
    after: Annotated[int, typer.Option(help="Only the events after this seq.")] = 0,
    limit: Annotated[
        int | None, typer.Option(min=1, help="At most this many events; `next_after` says where more begin.")
    ] = None,
) -> None:
    """A job's summary and its event history (all of it, or a page) as JSON, as ``GET /api/jobs/{id}``."""
    from finetuneflow import jobs

    try:
        typer.echo(json.dumps(jobs.show(job_id, after=after, limit=limit), indent=2, default=str))
    except LookupError as err:
        fail(err)


@jobs_app.command("logs")
def jobs_logs(
    job_id: JobId,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the job is done.")
    ] = False,
    after: Annotated[int, typer.Option(help="Start after this event seq.")] = 0,
) -> None:
    """A job's events, one line each; with --follow, new ones as they come, until it ends."""
    from finetuneflow import jobs
    from finetuneflow.state import jobs as log

    try:
        events = jobs.follow(job_id, after) if follow else iter(log.events(job_id, after))
        for event in events:
            console.print(_line(event), highlight=False)
        status = log.get(job_id)["status"]
    except LookupError as err:
        fail(err)
    if follow and status != "finished":
        raise typer.Exit(1)


@jobs_app.command("cancel")
def jobs_cancel(job_id: JobId) -> None:
    """Cancel a queued job now, or a running one at its next progress event."""
    from finetuneflow import jobs

    try:
        status = jobs.cancel(job_id)
    except LookupError as err:
        fail(err)
    said = {"running": "cancel requested; it stops at its next progress event", "cancelled": "cancelled"}
    console.print(f"job {job_id}: {said.get(status, f'already {status}')}")


def _line(event: dict[str, Any]) -> str:
    p = event["payload"]
    at = event["at"][11:19]
    if event["kind"] == "progress":
        of = f" {p['done']:g}/{p['total']:g}" if p.get("total") else ""
        metrics = " ".join(f"{k}={_num(v)}" for k, v in (p.get("metrics") or {}).items())
        return (
            f"{event['seq']:>5} {at} {p['step']}:{p['stage']}{of} {p.get('message') or ''} {metrics}".rstrip()
        )
    detail = p.get("error") or p.get("reason") or (json.dumps(p, default=str) if p else "")
    return f"{event['seq']:>5} {at} {event['kind']} {detail}"[:400].rstrip()


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _status(status: str) -> str:
    colour = {"finished": "green", "failed": "red", "running": "cyan", "cancelled": "yellow"}.get(status, "")
    return f"[{colour}]{status}[/{colour}]" if colour else status
