"""Persisting a file's chunks, with exact and near-duplicate detection across the project.

Nothing is deleted by dedup or filters: a dropped chunk is stored with ``drop_reason`` (and
``duplicate_of`` for duplicates), so the dataset step can skip it and a user can see why.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from finetuneflow.ingest.dedup import DedupConfig, LSHIndex
from finetuneflow.state import schema

EXACT = "exact duplicate"
NEAR = "near duplicate"
SHORT = "too short"


class DedupIndex:
    """Kept chunks of a project: exact keys and MinHash signatures in an LSH index.

    Owners are chunk ids; chunks not yet inserted get provisional negative keys, mapped to their
    ids once the batch is written (see :meth:`real_id`).
    """

    def __init__(self, cfg: DedupConfig, enabled: bool = True) -> None:
        self.cfg = cfg
        self.enabled = enabled
        self.exact: dict[str, list[int]] = {}
        self.excluded: set[int] = set()  # chunks of files being replaced in this ingest
        self.lsh = LSHIndex(cfg)
        self.sigs: dict[int, np.ndarray] = {}
        self.owners: dict[int, int] = {}
        self.real: dict[int, int] = {}  # provisional key -> chunk id
        self._next = -1

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

    def _add(self, owner: int, key: str | None, sig: np.ndarray | None) -> None:
        if key:
            self.exact.setdefault(key, []).append(owner)
        if sig is not None and len(sig) == self.cfg.num_perm:
            slot = len(self.owners)
            self.owners[slot] = owner
            self.sigs[slot] = sig
            self.lsh.add(slot, sig)

    def match(self, key: str, sig: np.ndarray) -> tuple[str, int] | None:
        """(reason, key of the kept chunk it duplicates) or None when it is new."""
        if not self.enabled:
            return None
        for owner in self.exact.get(key, []):
            if owner not in self.excluded:
                return EXACT, owner
        need = self.cfg.threshold * self.cfg.num_perm
        for slot in self.lsh.query(sig):
            if self.owners[slot] not in self.excluded and np.count_nonzero(self.sigs[slot] == sig) >= need:
                return NEAR, self.owners[slot]
        return None

    def keep(self, key: str, sig: np.ndarray) -> int:
        """Index a new chunk; returns its provisional key."""
        owner, self._next = self._next, self._next - 1
        self._add(owner, key, sig)
        return owner

    def real_id(self, owner: int) -> int | None:
        return owner if owner > 0 else self.real.get(owner)


@dataclass
class Pending:
    """Chunk rows of a batch of files, waiting for one bulk insert."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    provisional: list[int] = field(default_factory=list)  # per row: its key when kept, else 0
    links: list[tuple[int, int]] = field(default_factory=list)  # (row position, key it duplicates)


def plan_units(
    project_id: int,
    file_id: int,
    prepared: tuple[list[dict[str, Any]], list[str], np.ndarray | None],
    index: DedupIndex,
    min_chars: int,
    pending: Pending,
) -> Counter[str]:
    """Queue a file's units as chunk rows, marking duplicates and too-short ones; returns drop counts."""
    units, keys, sigs = prepared
    dropped: Counter[str] = Counter()
    for k, (unit, key, sig) in enumerate(zip(units, keys, sigs if sigs is not None else [], strict=True)):
        row = dict(
            unit,
            project_id=project_id,
            file_id=file_id,
            idx=k,
            content_hash=key,
            minhash=sig.astype(np.uint32).tobytes(),
            drop_reason=None,
            duplicate_of=None,
        )
        found = (SHORT, 0) if len(unit["text"].strip()) < min_chars else index.match(key, sig)
        if found is None:
            pending.provisional.append(index.keep(key, sig))
        else:
            row["drop_reason"] = found[0]
            dropped[found[0]] += 1
            pending.provisional.append(0)
            if found[1]:
                row["duplicate_of"] = index.real_id(found[1])
                if row["duplicate_of"] is None:  # its original is in this same batch
                    pending.links.append((len(pending.rows), found[1]))
        pending.rows.append(row)
    return dropped


def insert_pending(session: Session, index: DedupIndex, pending: Pending) -> None:
    """One bulk INSERT ... RETURNING for the batch, then the duplicate links inside it."""
    if not pending.rows:
        return
    # A Core insert of the table, not the ORM entity: the ORM's bulk path costs ~3x per row here.
    table: Any = schema.Chunk.__table__
    stmt = insert(table).returning(table.c.id, sort_by_parameter_order=True)
    ids = list(session.connection().execute(stmt, pending.rows).scalars())
    for key, chunk_id in zip(pending.provisional, ids, strict=True):
        if key:
            index.real[key] = chunk_id
    if pending.links:
        session.connection().execute(
            update(table).where(table.c.id == bindparam("cid")).values(duplicate_of=bindparam("dup")),
            [{"cid": ids[pos], "dup": index.real[key]} for pos, key in pending.links],
        )


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
