"""``ftf chat``, ``ftf runs`` and ``ftf model``: chat with a model, list and delete runs, fetch a base
model."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.table import Table

from finetuneflow.cli.common import Command, ConfigFile, Project, RunId, console, fail, freed, opt, settings


def register(app: typer.Typer) -> None:
    """Add ``chat``, the ``runs`` group and ``model`` to ``app``."""
    app.command("chat", cls=Command)(chat)
    app.add_typer(runs_app, name="runs")
    app.command("model")(model_prepare)


def chat(
    question: Annotated[
        str | None, typer.Argument(help="What to ask. Without it: an interactive chat (/help inside).")
    ] = None,
    project: Project = "default",
    run: RunId = None,
    base: Annotated[
        str | None,
        typer.Option("--base", help="Chat with this base model (a name or folder) instead of a run."),
    ] = None,
    memory: Annotated[
        bool, typer.Option("--memory/--no-memory", help="Recall memories into the prompt; memory commands.")
    ] = True,
    temperature: Annotated[float | None, opt("chat", "sampling.temperature")] = None,
    top_p: Annotated[float | None, opt("chat", "sampling.top_p")] = None,
    max_new_tokens: Annotated[int | None, opt("chat", "sampling.max_new_tokens")] = None,
    seed: Annotated[int | None, opt("chat", "sampling.seed")] = None,
    system: Annotated[str | None, opt("chat", "system")] = None,
    device: Annotated[str | None, opt("chat", "device")] = None,
    config: ConfigFile = None,
) -> None:
    """Chat with a run's tuned model (default: the newest) or a base model; every exchange is logged."""
    from finetuneflow import api
    from finetuneflow.api.chat import ChatSettings

    sampling = {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens, "seed": seed}
    try:
        cfg = settings(ChatSettings, config, system=system, device=device, sampling=sampling)
        session = api.open_chat(project, run, base=base, memory=memory, settings=cfg)
        if question is not None:
            console.print(session.ask(question).answer, markup=False, highlight=False)
            return
    except (ValueError, LookupError) as err:
        fail(err)
    from finetuneflow.cli.repl import run_repl

    run_repl(session, _typed_lines(), ConsoleSink())


class ConsoleSink:
    """The REPL's output on the terminal: answers streamed as they come, lines as they are."""

    def stream(self, piece: str) -> None:
        typer.echo(piece, nl=False)  # flushed at once

    def line(self, text: str = "") -> None:
        console.print(text, markup=False, highlight=False)


def _typed_lines(prompt: str = "you> ") -> Iterator[str]:
    """Lines typed at ``prompt`` (with line editing on a terminal) until Ctrl-D or Ctrl-C."""
    if sys.stdin.isatty():
        import readline  # noqa: F401  (input() gains editing and history)
    while True:
        try:
            line = input(prompt)
        except (EOFError, KeyboardInterrupt):
            typer.echo()
            return
        yield line


runs_app = typer.Typer(help="List the runs of a project, or delete one.", invoke_without_command=True)


@runs_app.callback()
def runs(ctx: typer.Context, project: Project = "default") -> None:
    """List the runs of a project (causal and classification), newest first, with their score."""
    from finetuneflow import api

    if ctx.invoked_subcommand is not None:  # `ftf runs -p P delete RUN`: the subcommand's project
        ctx.obj = {"project": project}
        return
    try:
        rows = api.list_runs(project)
    except LookupError as err:
        fail(err)
    table = Table("run", "kind", "status", "dataset", "base model", "score")
    table.columns[0].no_wrap = True
    for r in rows:
        table.add_row(r["id"], r["kind"], r["status"], r["dataset"], r["base_model"], _score(r))
    console.print(table)


@runs_app.command("delete")
def runs_delete(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="The run's id (`ftf runs` lists them).")],
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Project name (else the group's, else 'default').")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
) -> None:
    """Delete a run with its weights, checkpoints, metrics, evaluation and exports.

    Refused while a job uses it (its training, an evaluation or an export: `ftf jobs list`)."""
    from finetuneflow import api
    from finetuneflow.errors import RunInUse

    project = project or (ctx.obj or {}).get("project") or "default"
    if not yes:
        typer.confirm(f"Delete run {run} of {project!r} with its checkpoints and exports?", abort=True)
    try:
        gone = api.delete_run(project, run)
    except (LookupError, RunInUse, OSError) as err:  # OSError: a file could not move; the run is whole
        fail(err)
    console.print(f"deleted run {run} ({freed(gone['bytes'])} freed)")


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
