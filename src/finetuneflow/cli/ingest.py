"""``ftf ingest``: files and folders into a project's chunks; ``ftf ingest-report``: what the last
ingest did to every input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from finetuneflow.cli.common import (
    Background,
    Command,
    ConfigFile,
    Project,
    console,
    enqueue,
    fail,
    opt,
    settings,
)

_COLOURS = {"failed": "red", "partial": "yellow", "skipped": "dim"}


def register(app: typer.Typer) -> None:
    """Add ``ingest`` and ``ingest-report`` to ``app``."""
    app.command("ingest", cls=Command)(ingest)
    app.command("ingest-report", cls=Command)(ingest_report)


def ingest(
    inputs: Annotated[list[Path], typer.Argument(help="Files and folders to ingest.")],
    project: Project = "default",
    model: Annotated[str | None, opt("ingest", "tokenizer")] = None,
    max_tokens: Annotated[int | None, opt("ingest", "max_tokens")] = None,
    overlap: Annotated[int | None, opt("ingest", "overlap")] = None,
    domain: Annotated[str | None, opt("ingest", "domain")] = None,
    scrub_pii: Annotated[bool | None, opt("ingest", "scrub_pii", "--scrub-pii/--keep-pii")] = None,
    dedup: Annotated[bool | None, opt("ingest", "dedup", "--dedup/--no-dedup")] = None,
    workers: Annotated[int | None, opt("ingest", "workers")] = None,
    max_file_mb: Annotated[float | None, opt("ingest", "max_file_mb")] = None,
    max_record_mb: Annotated[float | None, opt("ingest", "max_record_mb")] = None,
    max_depth: Annotated[int | None, opt("ingest", "max_depth")] = None,
    reread: Annotated[bool | None, opt("ingest", "reread", "--reread")] = None,
    config: ConfigFile = None,
    background: Background = False,
) -> None:
    """Read documents, Q&A sheets, conversations, code and web pages into a project.

    Prints one line per input (status, chunks, its whole path, every reason) and writes the same as
    JSON to the project folder: see ``ftf ingest-report``.
    """
    from finetuneflow import api
    from finetuneflow.cli.progress import RichProgress
    from finetuneflow.ingest.config import IngestConfig

    try:
        cfg = settings(
            IngestConfig, config, tokenizer=model, max_tokens=max_tokens, overlap=overlap, domain=domain,
            scrub_pii=scrub_pii, dedup=dedup, workers=workers, max_file_mb=max_file_mb,
            max_record_mb=max_record_mb, max_depth=max_depth, reread=reread,
        )  # fmt: skip
        if background:  # the worker may run elsewhere in the file system: absolute paths
            from finetuneflow.config import to_dict

            return enqueue(
                "ingest", project, {"inputs": [str(p.resolve()) for p in inputs], "config": to_dict(cfg)}
            )
        with RichProgress() as sink:
            api.ingest(inputs, project, cfg, sink)
        data = api.ingest_report(project)
    except (ValueError, LookupError) as err:
        fail(err)
    show(data)
    failed = data["counts"].get("failed", 0)
    if failed:
        console.print(f"[red]{failed} file(s) failed[/red]; the others were ingested.")
        raise typer.Exit(1)


def ingest_report(
    project: Project = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Show what the project's last ingest did to every input (from its ingest-report.json)."""
    from finetuneflow import api

    try:
        data = api.ingest_report(project)
    except LookupError as err:
        fail(err)
    if as_json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        show(data)


def show(data: dict[str, Any]) -> None:
    """Print the report: a line per input, never cut or wrapped, then the totals."""
    from finetuneflow.ingest.report import file_lines

    for f, line in zip(data["files"], file_lines(data["files"]), strict=True):
        colour = _COLOURS.get(f["status"], "green")
        console.print(f"[{colour}]{escape(line)}[/{colour}]", soft_wrap=True, highlight=False)
    console.print(
        f"files: {data['counts']}  dropped: {data['dropped'] or 'none'}"
        + (f"  PII replaced: {data['pii']}" if data["pii"] else ""),
        soft_wrap=True,
    )
