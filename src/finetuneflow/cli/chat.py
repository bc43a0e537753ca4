"""``ftf chat``, ``ftf runs`` and ``ftf model``: ask a tuned model, list runs, fetch a base model."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from finetuneflow.cli.common import Project, RunId, console, fail


def register(app: typer.Typer) -> None:
    """Add ``chat``, ``runs`` and ``model`` to ``app``."""
    app.command("chat")(chat)
    app.command("runs")(runs)
    app.command("model")(model_prepare)


def chat(
    question: Annotated[str, typer.Argument(help="What to ask the tuned model.")],
    project: Project = "default",
    run: RunId = None,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer in tokens.")] = 128,
) -> None:
    """Ask the tuned model of a run one question."""
    from finetuneflow import api

    try:
        console.print(api.chat(project, question, run, max_new_tokens))
    except (ValueError, LookupError) as err:
        fail(err)


def runs(project: Project = "default") -> None:
    """List the runs of a project."""
    from finetuneflow import api

    try:
        rows = api.list_runs(project)
    except LookupError as err:
        fail(err)
    table = Table("run", "status", "dataset", "base model", "eval loss")
    for r in rows:
        table.add_row(
            r["id"],
            r["status"],
            r["dataset"],
            r["base_model"],
            f"{r['eval_loss']:.3f}" if r["eval_loss"] is not None else "-",
        )
    console.print(table)


def model_prepare(
    name: Annotated[str, typer.Argument(help="Model name to resolve.")] = "smollm2-135m-instruct",
) -> None:
    """Resolve a base model to a local safetensors folder (converting a GGUF once) and print it."""
    from finetuneflow.errors import ModelError
    from finetuneflow.models.resolve import resolve_model

    try:
        console.print(str(resolve_model(name)))
    except ModelError as err:
        fail(err)
