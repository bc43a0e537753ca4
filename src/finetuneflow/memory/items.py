"""The memory's rows in the project database: add, find, list, forget, purge, and the vectors the
index is rebuilt from. Functions of a session, so the caller decides what one transaction holds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from finetuneflow.memory.embedding import as_vector
from finetuneflow.state.schema import Chunk, File, MemoryItem

PUBLIC = (
    "id",
    "kind",
    "text",
    "importance",
    "tags",
    "source",
    "chunk_id",
    "exchange_id",
    "corrects",
    "superseded_by",
    "embedder",
    "meta",
    "created_at",
    "updated_at",
    "expires_at",
    "forgotten_at",
)


def now() -> datetime:
    return datetime.now(UTC)


def aware(when: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes of what were UTC ones."""
    return when.replace(tzinfo=UTC) if when is not None and when.tzinfo is None else when


def public(item: MemoryItem) -> dict[str, Any]:
    """An item as a plain dict (times as ISO strings)."""
    out = {name: getattr(item, name) for name in PUBLIC}
    for key in ("created_at", "updated_at", "expires_at", "forgotten_at"):
        when = aware(out[key])
        out[key] = when.isoformat() if when else None
    return out


def expired(item: MemoryItem, at: datetime) -> bool:
    expires = aware(item.expires_at)
    return expires is not None and expires <= at


def get(s: Session, project_id: int, item_id: int, live: bool = True) -> MemoryItem:
    """Item ``item_id`` of the project. Raises LookupError when there is none (or, with ``live``, it
    is forgotten)."""
    item = s.get(MemoryItem, item_id)
    if item is None or item.project_id != project_id or (live and item.forgotten_at is not None):
        raise LookupError(f"no memory item #{item_id} (see `ftf memory list`)")
    return item


def live(project_id: int) -> Any:
    """The select of a project's items that are not forgotten."""
    return select(MemoryItem).where(MemoryItem.project_id == project_id, MemoryItem.forgotten_at.is_(None))


def any_live(s: Session, project_id: int) -> bool:
    """Whether the project's memory holds anything (recall on an empty one loads no embedder)."""
    return s.scalar(live(project_id).with_only_columns(MemoryItem.id).limit(1)) is not None


def fingerprint(s: Session, project_id: int) -> tuple[Any, ...]:
    """What changes whenever an item is added, updated, forgotten or purged."""
    row = s.execute(
        select(func.count(MemoryItem.id), func.max(MemoryItem.id), func.max(MemoryItem.updated_at)).where(
            MemoryItem.project_id == project_id
        )
    ).one()
    forgotten = s.scalar(
        select(func.count(MemoryItem.id)).where(
            MemoryItem.project_id == project_id, MemoryItem.forgotten_at.is_not(None)
        )
    )
    return (*row, forgotten)


def vectors(s: Session, project_id: int, embedder: str) -> dict[int, np.ndarray]:
    """id -> embedding of the live items embedded by ``embedder``: what the index must hold."""
    rows = s.execute(
        select(MemoryItem.id, MemoryItem.embedding).where(
            MemoryItem.project_id == project_id,
            MemoryItem.forgotten_at.is_(None),
            MemoryItem.embedder == embedder,
            MemoryItem.embedding.is_not(None),
        )
    )
    return {i: as_vector(blob) for i, blob in rows}


def texts(s: Session, project_id: int) -> list[tuple[int, str]]:
    """(id, text) of the live items: what BM25 indexes."""
    return [
        (i, t)
        for i, t in s.execute(
            select(MemoryItem.id, MemoryItem.text).where(
                MemoryItem.project_id == project_id, MemoryItem.forgotten_at.is_(None)
            )
        )
    ]


def by_ids(s: Session, project_id: int, ids: Sequence[int]) -> list[MemoryItem]:
    query = live(project_id).where(MemoryItem.id.in_(list(ids)))
    return list(s.scalars(query))


def listing(
    s: Session,
    project_id: int,
    kind: str | None = None,
    tag: str | None = None,
    forgotten: bool = False,
    limit: int | None = None,
) -> list[MemoryItem]:
    """Items newest first: live ones (with ``forgotten``, only the forgotten), of ``kind``, tagged ``tag``."""
    query = select(MemoryItem).where(MemoryItem.project_id == project_id)
    gone = MemoryItem.forgotten_at.is_not(None)
    query = query.where(gone if forgotten else ~gone)
    if kind:
        query = query.where(MemoryItem.kind == kind)
    rows = [r for r in s.scalars(query.order_by(MemoryItem.id.desc())) if not tag or tag in (r.tags or [])]
    return rows[:limit] if limit else rows


def purge(s: Session, project_id: int, at: datetime) -> list[int]:
    """Delete the forgotten and the expired items; returns their ids. Links to them are cleared."""
    ids = list(
        s.scalars(
            select(MemoryItem.id).where(
                MemoryItem.project_id == project_id,
                or_(MemoryItem.forgotten_at.is_not(None), MemoryItem.expires_at <= at),
            )
        )
    )
    if ids:
        for column in (MemoryItem.corrects, MemoryItem.superseded_by):
            s.execute(update(MemoryItem).where(column.in_(ids)).values({column.key: None}))
        s.execute(delete(MemoryItem).where(MemoryItem.id.in_(ids)))
    return ids


def counts(s: Session, project_id: int, at: datetime) -> dict[str, Any]:
    """Counts by kind of the live items, and of the forgotten, expired and superseded ones."""
    rows = s.execute(
        select(
            MemoryItem.kind,
            MemoryItem.forgotten_at,
            MemoryItem.expires_at,
            MemoryItem.superseded_by,
            func.length(MemoryItem.text),
        ).where(MemoryItem.project_id == project_id)
    ).all()
    by_kind: dict[str, int] = {}
    out = {"forgotten": 0, "expired": 0, "superseded": 0, "text_bytes": 0}
    for kind, forgotten, expires, superseded, length in rows:
        out["text_bytes"] += length or 0
        if forgotten is not None:
            out["forgotten"] += 1
            continue
        by_kind[kind] = by_kind.get(kind, 0) + 1
        out["expired"] += int(expires is not None and aware(expires) <= at)  # type: ignore[operator]
        out["superseded"] += int(superseded is not None)
    return {"items": sum(by_kind.values()), "by_kind": by_kind, **out}


def unsynced_chunks(s: Session, project_id: int) -> list[tuple[Chunk, str]]:
    """The project's kept chunks that have no memory item yet (a forgotten one counts), with their
    file's path: what ``memory sync`` embeds."""
    have = select(MemoryItem.chunk_id).where(
        MemoryItem.project_id == project_id, MemoryItem.chunk_id.is_not(None)
    )
    query = (
        select(Chunk, File.path)
        .join(File, Chunk.file_id == File.id)
        .where(Chunk.project_id == project_id, Chunk.drop_reason.is_(None), Chunk.id.not_in(have))
        .order_by(Chunk.id)
    )
    return [(c, p) for c, p in s.execute(query).all()]


def stale(s: Session, project_id: int, embedder: str) -> list[MemoryItem]:
    """Live items not embedded by ``embedder`` (the project switched embedders)."""
    query = live(project_id).where(or_(MemoryItem.embedder.is_(None), MemoryItem.embedder != embedder))
    return list(s.scalars(query))


def chunk_source(chunk: Chunk, path: str) -> str:
    """Where a chunk came from, as a person cites it: ``handbook.md line 12``, ``manual.pdf p. 3``."""
    if chunk.page is not None:
        return f"{path} p. {chunk.page}"
    if chunk.line is not None:
        return f"{path} line {chunk.line}"
    return path
