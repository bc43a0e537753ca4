"""``ftf memory teach | recall | list | correct | forget | purge | history | status | sync``: the
project's memory from the command line, over :mod:`finetuneflow.api`'s memory functions."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from finetuneflow.cli.common import Command, ConfigFile, Project, console, fail, opt, settings

if TYPE_CHECKING:
    from finetuneflow.memory.config import MemoryConfig

memory_app = typer.Typer(
    help="Teach, recall, correct and forget what the project's memory holds.", no_args_is_help=True
)

Embedder = Annotated[str | None, opt("memory", "embedder")]
Importance = Annotated[
    float | None,
    typer.Option("--importance", "-i", help="0-1 (default by kind: facts 0.75, corrections 0.95)."),
]


def register(app: typer.Typer) -> None:
    """Add the ``memory`` command group to ``app``."""
    app.add_typer(memory_app, name="memory")


def _config(config: Any, **flags: Any) -> MemoryConfig:
    from finetuneflow.memory.config import MemoryConfig

    return settings(MemoryConfig, config, **flags)


def _print(value: Any) -> None:
    console.print_json(json.dumps(value, default=str))


@memory_app.command("teach", cls=Command)
def memory_teach(
    text: Annotated[str, typer.Argument(help="The fact to remember.")],
    project: Project = "default",
    importance: Importance = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="A tag (repeatable).")] = None,
    source: Annotated[str | None, typer.Option("--source", help="Where the fact comes from.")] = None,
    expires_in_days: Annotated[
        float | None, typer.Option("--expires-in-days", help="Forget it after this many days.")
    ] = None,
    embedder: Embedder = None,
    config: ConfigFile = None,
) -> None:
    """Teach the memory a fact; prints its id once it is stored."""
    from finetuneflow import api

    try:
        cfg = _config(config, embedder=embedder)
        item = api.teach(
            project, text, importance, tag or (), source, expires_in_days=expires_in_days, config=cfg
        )
    except (ValueError, LookupError) as err:
        fail(err)
    console.print(f"taught #{item['id']} (importance {item['importance']})")


@memory_app.command("recall", cls=Command)
def memory_recall(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    project: Project = "default",
    k: Annotated[int | None, opt("memory", "k", "--k", "-k")] = None,
    hybrid: Annotated[bool | None, opt("memory", "hybrid", "--hybrid/--vector-only")] = None,
    embedder: Embedder = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the items as JSON.")] = False,
    config: ConfigFile = None,
) -> None:
    """The best-matching items, with the parts of each score (similarity, importance, recency)."""
    from finetuneflow import api

    try:
        cfg = _config(config, k=k, hybrid=hybrid, embedder=embedder)
        hits = api.recall(project, query, cfg.k, config=cfg)
    except (ValueError, LookupError) as err:
        fail(err)
    if as_json:
        _print(hits)
        return
    table = Table("id", "kind", "score", "sim", "imp", "rec", "text", "source")
    for h in hits:
        p = h["parts"]
        mark = " (corrected)" if h["superseded_by"] else ""
        table.add_row(
            str(h["id"]),
            h["kind"] + mark,
            f"{h['score']:.3f}",
            f"{p['similarity']:.2f}",
            f"{p['importance']:.2f}",
            f"{p['recency']:.2f}",
            h["text"],
            h["source"],
        )
    console.print(table)


@memory_app.command("list")
def memory_list(
    project: Project = "default",
    kind: Annotated[
        str | None, typer.Option("--kind", help="document, fact, interaction or correction.")
    ] = None,
    tag: Annotated[str | None, typer.Option("--tag", "-t", help="Only items with this tag.")] = None,
    forgotten: Annotated[bool, typer.Option("--forgotten", help="List the forgotten items instead.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", "-n", help="At most this many.")] = None,
) -> None:
    """Items newest first, with their importance, tags and source."""
    from finetuneflow import api

    try:
        rows = api.list_memories(project, kind, tag, forgotten, limit)
    except (ValueError, LookupError) as err:
        fail(err)
    table = Table("id", "kind", "importance", "tags", "text", "source", "updated")
    for r in rows:
        kind_shown = r["kind"] + (f" -> #{r['superseded_by']}" if r["superseded_by"] else "")
        table.add_row(
            str(r["id"]),
            kind_shown,
            f"{r['importance']:.2f}",
            ", ".join(r["tags"]),
            r["text"],
            r["source"],
            r["updated_at"][:19],
        )
    console.print(table)
    console.print(f"{len(rows)} items")


@memory_app.command("correct")
def memory_correct(
    target: Annotated[str, typer.Argument(help="The item's id, or a query whose best match is the item.")],
    new_text: Annotated[str, typer.Argument(help="What is right.")],
    project: Project = "default",
    importance: Importance = None,
) -> None:
    """Correct an item: the correction outranks it in recall; the old one is kept as history."""
    from finetuneflow import api

    try:
        item = api.correct(project, int(target) if target.isdigit() else target, new_text, importance)
    except (ValueError, LookupError) as err:
        fail(err)
    console.print(f"#{item['corrects']} corrected by #{item['id']}")


@memory_app.command("forget")
def memory_forget(
    item_id: Annotated[int, typer.Argument(help="The item's id.")],
    project: Project = "default",
) -> None:
    """Forget an item (it leaves recall at once; `ftf memory purge` deletes it)."""
    from finetuneflow import api

    try:
        api.forget(project, item_id)
    except (ValueError, LookupError) as err:
        fail(err)
    console.print(f"forgot #{item_id} (purge deletes it for good)")


@memory_app.command("purge")
def memory_purge(project: Project = "default") -> None:
    """Delete the forgotten and the expired items for good."""
    from finetuneflow import api

    try:
        result = api.purge(project)
    except (ValueError, LookupError) as err:
        fail(err)
    console.print(f"purged {result['purged']} items")


@memory_app.command("history")
def memory_history(
    item_id: Annotated[int, typer.Argument(help="The item's id.")],
    project: Project = "default",
) -> None:
    """An item and the corrections that followed it, oldest first."""
    from finetuneflow import api

    try:
        chain = api.memory_history(project, item_id)
    except (ValueError, LookupError) as err:
        fail(err)
    for r in chain:
        console.print(f"#{r['id']} {r['kind']} ({r['updated_at'][:19]}): {r['text']}", markup=False)


@memory_app.command("status", cls=Command)
def memory_status(project: Project = "default", embedder: Embedder = None, config: ConfigFile = None) -> None:
    """Counts by kind, sizes, the embedder and the index's health (JSON)."""
    from finetuneflow import api

    try:
        _print(api.memory_status(project, config=_config(config, embedder=embedder)))
    except (ValueError, LookupError) as err:
        fail(err)


@memory_app.command("sync", cls=Command)
def memory_sync(project: Project = "default", embedder: Embedder = None, config: ConfigFile = None) -> None:
    """Embed the project's ingested chunks into its memory (only those not there yet)."""
    from finetuneflow import api
    from finetuneflow.cli.progress import RichProgress

    try:
        with RichProgress() as sink:
            result = api.memory_sync(project, config=_config(config, embedder=embedder), on_event=sink)
    except (ValueError, LookupError) as err:
        fail(err)
    console.print(f"{result['added']} chunks added, {result['reembedded']} items re-embedded")
