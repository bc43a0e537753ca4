"""Persisting a file's chunks, with exact and near-duplicate detection across the project.

Nothing is deleted by dedup or filters: a dropped chunk is stored with ``drop_reason`` (and
``duplicate_of`` for duplicates), so the dataset step can skip it and a user can see why.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from finetuneflow.ingest.dedup import DedupConfig, LSHIndex
from finetuneflow.state import schema

EXACT = "exact duplicate"
NEAR = "near duplicate"
SHORT = "too short"


class DedupIndex:
    """Kept chunks of a project: exact keys and MinHash signatures in an LSH index."""

    def __init__(self, cfg: DedupConfig, enabled: bool = True) -> None:
        self.cfg = cfg
        self.enabled = enabled
        self.exact: dict[str, list[schema.Chunk | int]] = {}
        self.excluded: set[int] = set()  # chunks of files being replaced in this ingest
        self.lsh = LSHIndex(cfg)
        self.sigs: dict[int, np.ndarray] = {}
        self.owners: dict[int, schema.Chunk | int] = {}

    def load(self, session: Session, project_id: int) -> None:
        """Index every kept chunk already in the project."""
        rows = session.execute(
            select(schema.Chunk.id, schema.Chunk.content_hash, schema.Chunk.minhash).where(
                schema.Chunk.project_id == project_id, schema.Chunk.drop_reason.is_(None)
            )
        )
        for chunk_id, key, blob in rows:
            sig = np.frombuffer(blob, dtype=np.uint32) if blob else None
            self._add(chunk_id, key, sig)

    def _add(self, owner: schema.Chunk | int, key: str | None, sig: np.ndarray | None) -> None:
        if key:
            self.exact.setdefault(key, []).append(owner)
        if sig is not None and len(sig) == self.cfg.num_perm:
            slot = len(self.owners)
            self.owners[slot] = owner
            self.sigs[slot] = sig
            self.lsh.add(slot, sig)

    def match(self, key: str, sig: np.ndarray) -> tuple[str, schema.Chunk | int] | None:
        """(reason, the kept chunk it duplicates) or None when it is new."""
        if not self.enabled:
            return None
        for owner in self.exact.get(key, []):
            if self._live(owner):
                return EXACT, owner
        need = self.cfg.threshold * self.cfg.num_perm
        for slot in self.lsh.query(sig):
            if self._live(self.owners[slot]) and np.count_nonzero(self.sigs[slot] == sig) >= need:
                return NEAR, self.owners[slot]
        return None

    def _live(self, owner: schema.Chunk | int) -> bool:
        return not isinstance(owner, int) or owner not in self.excluded

    def keep(self, chunk: schema.Chunk, key: str, sig: np.ndarray) -> None:
        self._add(chunk, key, sig)


Link = tuple[schema.Chunk, "schema.Chunk | int"]


def store_units(
    session: Session,
    project_id: int,
    file_id: int,
    prepared: tuple[list[dict[str, Any]], list[str], np.ndarray | None],
    index: DedupIndex,
    min_chars: int,
    links: list[Link],
) -> Counter[str]:
    """Add a file's units as chunks, marking duplicates and too-short ones; returns drop counts.

    ``links`` collects (duplicate, original) pairs: the caller sets ``duplicate_of`` after the flush
    that gives new chunks their ids (one flush per batch of files, not per chunk).
    """
    units, keys, sigs = prepared
    dropped: Counter[str] = Counter()
    for k, (unit, key, sig) in enumerate(zip(units, keys, sigs if sigs is not None else [], strict=True)):
        chunk = schema.Chunk(
            project_id=project_id,
            file_id=file_id,
            idx=k,
            content_hash=key,
            minhash=sig.astype(np.uint32).tobytes(),
            **unit,
        )
        found: tuple[str, schema.Chunk | int | None] | None = (
            (SHORT, None) if len(unit["text"].strip()) < min_chars else index.match(key, sig)
        )
        if found is None:
            index.keep(chunk, key, sig)
        else:
            chunk.drop_reason = found[0]
            dropped[found[0]] += 1
            if found[1] is not None:
                links.append((chunk, found[1]))
        session.add(chunk)
    return dropped


def resolve_links(links: list[Link]) -> None:
    """After a flush: point each duplicate at its original's id."""
    for chunk, target in links:
        chunk.duplicate_of = target if isinstance(target, int) else target.id
    links.clear()


def forget_file_chunks(session: Session, file_id: int) -> list[int]:
    """Delete a file's chunks (returning their ids); chunks elsewhere that were dropped as their
    duplicates come back, since what they duplicated is gone."""
    old = list(session.scalars(select(schema.Chunk.id).where(schema.Chunk.file_id == file_id)))
    if old:
        session.execute(
            update(schema.Chunk)
            .where(schema.Chunk.duplicate_of.in_(old))
            .values(drop_reason=None, duplicate_of=None)
        )
        session.execute(delete(schema.Chunk).where(schema.Chunk.file_id == file_id))
    return old
