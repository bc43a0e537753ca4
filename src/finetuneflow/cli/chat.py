"""``ftf chat``, ``ftf runs`` and ``ftf model``: ask a tuned model, list runs, fetch a base model."""

from __future__ import annotations

from typing import Annotated, Any

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
    """List the runs of a project (causal and classification), newest first, with their score."""
    from finetuneflow import api

    try:
        rows = api.list_runs(project)
    except LookupError as err:
        fail(err)
    table = Table("run", "kind", "status", "dataset", "base model", "score")
    table.columns[0].no_wrap = True
    for r in rows:
        table.add_row(r["id"], r["kind"], r["status"], r["dataset"], r["base_model"], _score(r))
    console.print(table)


def _score(run: dict[str, Any]) -> str:
    """A run's headline number: eval loss of a causal run, accuracy and macro-F1 of a classifier."""
    if run["accuracy"] is not None:
        return f"acc {run['accuracy']:.3f}, F1 {run['macro_f1']:.3f}"
    return f"loss {run['eval_loss']:.3f}" if run["eval_loss"] is not None else "-"


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
