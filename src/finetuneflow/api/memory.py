"""The memory of a project, as plain functions: teach, recall, correct, forget, purge, list, status,
sync, and keeping a chat exchange. Chat reaches them through :mod:`finetuneflow.api.memory_port`;
``ftf memory`` and ``ftf serve`` call them directly.

Each takes the project first and returns plain dicts. An opened memory is kept per project and
settings for the process (it re-reads the database when another process changed it).

Raises (every function here): ``LookupError`` for an unknown project or item, or a ``correct``
query that matches nothing; ``ValueError`` for bad input (``ConfigError`` for settings).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import astuple
from typing import Any

from finetuneflow.api._common import jsonable, project_id
from finetuneflow.events import Event, EventSink
from finetuneflow.memory import items
from finetuneflow.memory.config import MemoryConfig
from finetuneflow.memory.store import Memory
from finetuneflow.state import session_scope
from finetuneflow.state.db import database_url
from finetuneflow.state.jobs import tracked

_OPEN: dict[tuple[Any, ...], Memory] = {}


def open_memory(project: str, config: MemoryConfig | None = None, create: bool = False) -> Memory:
    """The memory of ``project`` (opened once per process and settings; the index repaired on open).
    Raises LookupError for an unknown project unless ``create``."""
    from finetuneflow import paths

    try:
        pid: int | None = project_id(project)
    except LookupError:
        if not create:
            raise
        pid = None
    cfg = config or MemoryConfig()
    key = (database_url(), str(paths.home()), project, astuple(cfg))
    opened = _OPEN.get(key)
    # a project deleted and made again under its name (here or in another process) has a new id:
    # the memory opened for the old one would write under that id
    if opened is None or opened.project_id != pid:
        opened = _OPEN[key] = Memory(project, cfg)
    return opened


def close_memories() -> None:
    """Drop the opened memories (the next call opens afresh, as a new process would)."""
    _OPEN.clear()


def teach(
    project: str,
    text: str,
    importance: float | None = None,
    tags: Sequence[str] = (),
    source: str | None = None,
    *,
    expires_in_days: float | None = None,
    config: MemoryConfig | None = None,
) -> dict[str, Any]:
    """Teach ``project``'s memory a fact (importance 0.75 unless given); returns the stored item,
    which is in the database and the index when this returns."""
    memory = open_memory(project, config, create=True)
    return jsonable(memory.teach(text, importance, tags, source, expires_in_days))


def recall(
    project: str, query: str, k: int | None = None, *, config: MemoryConfig | None = None
) -> list[dict[str, Any]]:
    """The ``k`` items best matching ``query``, best first: ``id``, ``text``, ``kind``, ``source``,
    ``importance``, ``score`` and its ``parts`` (vector, bm25, similarity, importance, recency).
    An empty memory answers ``[]`` without loading its embedder."""
    with session_scope() as s:
        if not items.any_live(s, project_id(project)):
            return []
    return jsonable(open_memory(project, config).recall(query, k))


def has_memories(project: str) -> bool:
    """Whether ``project``'s memory holds a live item (without loading its embedder)."""
    with session_scope() as s:
        return items.any_live(s, project_id(project))


def retriever(
    project: str, k: int | None = None, *, config: MemoryConfig | None = None
) -> Callable[[str], list[dict[str, Any]]]:
    """``retrieve(question)``: the ``k`` items :func:`recall` gives for it, for a step that takes the
    memory as a plain function (evaluation's memory columns)."""

    def retrieve(question: str) -> list[dict[str, Any]]:
        return recall(project, question, k, config=config)

    return retrieve


def correct(
    project: str,
    target: int | str,
    new_text: str,
    importance: float | None = None,
    *,
    config: MemoryConfig | None = None,
) -> dict[str, Any]:
    """Correct item ``target`` (an id, or a query whose best match is the item) with ``new_text``:
    the correction outranks it in recall; the old item is kept as its history."""
    return jsonable(open_memory(project, config).correct(target, new_text, importance))


def forget(project: str, item_id: int | str, *, config: MemoryConfig | None = None) -> dict[str, Any]:
    """Forget item ``item_id`` (soft: out of recall; ``purge`` deletes it)."""
    return jsonable(open_memory(project, config).forget(_id(item_id)))


def _id(item_id: int | str) -> int:
    if isinstance(item_id, int) or str(item_id).isdigit():
        return int(item_id)
    raise ValueError(f"a memory item id is a number (see `ftf memory list`), not {item_id!r}")


def purge(project: str, *, config: MemoryConfig | None = None) -> dict[str, Any]:
    """Delete the forgotten and the expired items for good."""
    return open_memory(project, config).purge()


def list_memories(
    project: str,
    kind: str | None = None,
    tag: str | None = None,
    forgotten: bool = False,
    limit: int | None = None,
    *,
    config: MemoryConfig | None = None,
) -> list[dict[str, Any]]:
    """Items newest first: of ``kind``, tagged ``tag``; with ``forgotten``, the forgotten ones."""
    return jsonable(open_memory(project, config).listing(kind, tag, forgotten, limit))


def memory_history(
    project: str, item_id: int | str, *, config: MemoryConfig | None = None
) -> list[dict[str, Any]]:
    """Item ``item_id`` and the corrections that followed it, oldest first."""
    return jsonable(open_memory(project, config).history(_id(item_id)))


def memory_status(project: str, *, config: MemoryConfig | None = None) -> dict[str, Any]:
    """Counts by kind, sizes, the embedder and the index's health."""
    return jsonable(open_memory(project, config).status())


def memory_sync(
    project: str, *, config: MemoryConfig | None = None, on_event: EventSink | None = None
) -> dict[str, Any]:
    """Embed the project's ingested chunks into its memory (those not there yet), as a tracked job."""
    memory = open_memory(project, config)
    with tracked("memory-sync", memory.project_id, {}, on_event) as (sink, done):

        def progress(n: int, total: int) -> None:
            sink(Event("memory-sync", "embed", n, total))

        result = memory.sync(progress)
        done(result)
    return result


def remember_exchange(
    project: str,
    question: str,
    answer: str,
    retrieved_ids: Sequence[Any] = (),
    rating: int | None = None,
    *,
    config: MemoryConfig | None = None,
) -> dict[str, Any]:
    """Keep a chat question and its answer as an interaction item."""
    memory = open_memory(project, config, create=True)
    return jsonable(memory.remember_exchange(question, answer, retrieved_ids, rating))
