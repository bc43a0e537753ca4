"""``ftf evaluate``: base against tuned model on the eval split of the run's dataset."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from finetuneflow.cli.common import Command, ConfigFile, Project, RunId, console, fail, opt, settings


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` to ``app``."""
    app.command("evaluate", cls=Command)(evaluate)


def evaluate(
    project: Project = "default",
    run: RunId = None,
    answers: Annotated[int | None, opt("evaluate", "answers")] = None,
    config: ConfigFile = None,
) -> None:
    """Compare base and tuned model on the eval split of the run's dataset."""
    from finetuneflow import api
    from finetuneflow.cli.progress import RichProgress
    from finetuneflow.evaluate.step import EvalConfig

    try:
        cfg = settings(EvalConfig, config, answers=answers)
        with RichProgress() as sink:
            result = api.evaluate(project, run, cfg, sink)
    except (ValueError, LookupError, FileNotFoundError) as err:
        fail(err)
    table = Table("eval split", "examples", "base loss", "tuned loss", "base ppl", "tuned ppl")
    for kind, v in result["losses"].items():
        table.add_row(
            kind,
            str(v["examples"]),
            f"{v['base_loss']:.3f}",
            f"{v['tuned_loss']:.3f}",
            f"{v['base_perplexity']:.1f}",
            f"{v['tuned_perplexity']:.1f}",
        )
    console.print(table)
    for a in result["answers"][:3]:
        console.print(
            f"[bold]Q:[/bold] {a['question']}\n  [dim]base:[/dim]  {a['base'][:160]}\n"
            f"  [green]tuned:[/green] {a['tuned'][:160]}"
        )
