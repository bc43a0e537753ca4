"""The ``ftf`` command line: a table of plain functions over :mod:`finetuneflow.api`.

One module per command group, each with ``register(app)``; this module builds the app and
registers them, and none of them imports it back. Heavy libraries (torch, transformers,
SQLAlchemy) and the steps' config modules are imported inside commands, so ``ftf --help``
answers at once.
"""

from __future__ import annotations

import sys

import typer

from finetuneflow.cli import (
    chat,
    classify,
    dataset,
    evaluate,
    export,
    ingest,
    jobs,
    memory,
    projects,
    provider,
    serve,
    train,
    ui,
)

app = typer.Typer(
    help="FineTuneFlow: your material in, a fine-tuned model you run yourself out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# `ftf --help` lists the commands in this order, then the groups (dataset, provider, tensors, ...).
for group in (
    ingest,
    dataset,
    provider,
    train,
    evaluate,
    export,
    chat,
    memory,
    serve,
    classify,
    jobs,
    projects,
    ui,
):
    group.register(app)


# The commands that train start again with jemalloc preloaded (finetuneflow/allocator.py).
PRELOAD_COMMANDS = ("train", "worker")


def main() -> None:
    """The ``ftf`` console script."""
    if sys.argv[1:2] and sys.argv[1] in PRELOAD_COMMANDS:
        from finetuneflow import allocator  # here: `ftf --help` imports no module outside cli/

        try:
            allocator.reexec()
        except ValueError as err:  # FTF_ALLOCATOR names no allocator
            print(f"ftf: {err}", file=sys.stderr)
            raise SystemExit(2) from None
    app()
