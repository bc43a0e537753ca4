"""``ftf projects`` and ``ftf projects delete``: list the projects, delete one with all it holds."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from finetuneflow.cli.common import console, fail, freed

projects_app = typer.Typer(help="List the projects, or delete one.", invoke_without_command=True)


def register(app: typer.Typer) -> None:
    """Add the ``projects`` group to ``app``."""
    app.add_typer(projects_app, name="projects")


@projects_app.callback()
def projects(ctx: typer.Context) -> None:
    """List the projects, oldest first, with what each holds."""
    from finetuneflow.api import projects as papi

    if ctx.invoked_subcommand is not None:
        return
    table = Table("project", "files", "chunks", "examples", "runs", "created")
    for p in papi.list_projects():
        counts = (str(p[k]) for k in ("files", "chunks", "examples", "runs"))
        table.add_row(p["name"], *counts, p["created_at"][:19])
    console.print(table)


@projects_app.command("delete")
def projects_delete(
    name: Annotated[str, typer.Argument(help="The project's name (`ftf projects` lists them).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
) -> None:
    """Delete a project with everything in its folder and its records: uploads, chunks, datasets,
    runs, exports, chats and memory. Base models, exports written elsewhere (--out) and models
    registered in Ollama stay; its jobs stay in `ftf jobs list`. Refused while a job works in it."""
    from finetuneflow import api
    from finetuneflow.errors import ProjectInUse

    if not yes:
        typer.confirm(f"Delete project {name!r} with all its data, runs and exports?", abort=True)
    try:
        gone = api.delete_project(name)
    except (LookupError, ValueError, ProjectInUse, OSError) as err:  # OSError: the folder could not move
        fail(err)
    console.print(f"deleted project {name} ({freed(gone['bytes'])} freed)")
