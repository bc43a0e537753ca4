"""``ftf ingest``: files and folders into a project's chunks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

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


def register(app: typer.Typer) -> None:
    """Add ``ingest`` to ``app``."""
    app.command("ingest", cls=Command)(ingest)


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
    config: ConfigFile = None,
    background: Background = False,
) -> None:
    """Read documents, Q&A sheets, conversations, code and web pages into a project."""
    from finetuneflow import api
    from finetuneflow.cli.progress import RichProgress
    from finetuneflow.ingest.config import IngestConfig

    try:
        cfg = settings(
            IngestConfig, config, tokenizer=model, max_tokens=max_tokens, overlap=overlap, domain=domain,
            scrub_pii=scrub_pii, dedup=dedup, workers=workers,
        )  # fmt: skip
        if background:  # the worker may run elsewhere in the file system: absolute paths
            from finetuneflow.config import to_dict

            return enqueue(
                "ingest", project, {"inputs": [str(p.resolve()) for p in inputs], "config": to_dict(cfg)}
            )
        with RichProgress() as sink:
            report = api.ingest(inputs, project, cfg, sink)
    except (ValueError, LookupError) as err:
        fail(err)
    table = Table("file", "status", "chunks", "dropped", "problems / notes")
    for f in report.files:
        colour = {"failed": "red", "partial": "yellow", "skipped": "dim"}.get(f.status, "green")
        drops = ", ".join(f"{n} {why}" for why, n in f.dropped.items())
        said = "; ".join(f.problems + f.notes)[:200]
        table.add_row(f.path, f"[{colour}]{f.status}[/{colour}]", str(f.chunks), drops, said)
    console.print(table)
    console.print(
        f"files: {report.counts()}  dropped: {report.dropped() or 'none'}"
        + (f"  PII replaced: {report.pii}" if report.pii else "")
    )
    if report.failed:
        console.print(f"[red]{len(report.failed)} file(s) failed[/red]; the others were ingested.")
        raise typer.Exit(1)
