"""Persisting a file's chunks, with exact and near-duplicate detection across the project.

Nothing is deleted by dedup or filters: a dropped chunk is stored with ``drop_reason`` (and
``duplicate_of`` for duplicates), so the dataset step can skip it and a user can see why.

A stored signature (``chunks.minhash``) is little-endian uint32: first the
:func:`~finetuneflow.text.dedup.signature_tag` of the settings that made it, then its slots.
Signatures under other settings (another scheme, shingle, seed or length, or the untagged ones of
the 128-permutation scheme used before) are recomputed from the chunk's text when the project is
loaded, and written back, so a project never mixes incomparable signatures.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from finetuneflow.state import schema
from finetuneflow.text.dedup import DedupConfig, LSHIndex, parallel_signatures, signature_tag

EXACT = "exact duplicate"
NEAR = "near duplicate"
SHORT = "too short"
_IDS_PER_QUERY = 500  # chunk ids per "IN (...)" when re-signing, well under SQLite's variable limit


def encode_signature(sig: np.ndarray, tag: int) -> bytes:
    """The stored form of ``sig``: ``tag`` then the slots, little-endian uint32."""
    return struct.pack("<I", tag) + sig.astype("<u4", copy=False).tobytes()


def decode_signature(blob: bytes | None, tag: int, num_perm: int) -> np.ndarray | None:
    """The slots of a stored signature made under ``tag``; None for any other (or no) signature."""
    if not blob or len(blob) != 4 * (num_perm + 1) or struct.unpack_from("<I", blob)[0] != tag:
        return None
    return np.frombuffer(blob, dtype="<u4", offset=4).astype(np.uint32, copy=False)


class DedupIndex:
    """Kept chunks of a project: exact keys and MinHash signatures in an LSH index.

    Each indexed chunk has a slot (0, 1, ...): its owner (chunk id) in one int64 array, its
    signature in the LSH index under the slot's number, its exact key (as 20 raw bytes) pointing
    at the slot. Chunks not yet inserted are owned by their provisional key ``-(slot + 1)`` until
    the batch is written (:meth:`settle`). About 0.8 KB per kept chunk, so a 1 GB file's index
    stays a few hundred MB.
    """

    def __init__(self, cfg: DedupConfig, enabled: bool = True) -> None:
        self.cfg = cfg
        self.enabled = enabled
        self.tag = signature_tag(cfg)
        self.exact = _ExactKeys()  # sha1 digest -> slots
        self.excluded: set[int] = set()  # chunks of files being replaced in this ingest
        self.lsh = LSHIndex(cfg)
        self._owners = np.empty(1024, dtype=np.int64)
        self._slots = 0

    def load(self, session: Session, project_id: int) -> int:
        """Index every kept chunk already in the project, oldest first; returns how many signatures
        were stale (other settings or scheme) and have been recomputed and stored again."""
        chunk = schema.Chunk
        rows = session.execute(
            select(chunk.id, chunk.content_hash, chunk.minhash)
            .where(chunk.project_id == project_id, chunk.drop_reason.is_(None))
            .order_by(chunk.id)
        ).all()
        sigs = {cid: decode_signature(blob, self.tag, self.cfg.num_perm) for cid, _, blob in rows}
        fresh = _resign(session, [cid for cid, sig in sigs.items() if sig is None], self.cfg, self.tag)
        sigs.update(fresh)
        for chunk_id, key, _ in rows:
            self._add(chunk_id, key, sigs[chunk_id])
        return len(fresh)

    def _add(self, owner: int, key: str | None, sig: np.ndarray | None) -> int:
        slot = self._slots
        if slot == len(self._owners):
            self._owners = np.concatenate([self._owners, np.empty_like(self._owners)])
        self._owners[slot] = owner
        self._slots += 1
        if key:
            self.exact.add(_digest(key), slot)
        if sig is not None and len(sig) == self.cfg.num_perm:
            self.lsh.add(slot, sig)
        return slot

    def match(self, key: str, sig: np.ndarray) -> tuple[str, int] | None:
        """(reason, key of the kept chunk it duplicates) or None when it is new."""
        if not self.enabled:
            return None
        for slot in self.exact.slots(_digest(key)):
            owner = int(self._owners[slot])
            if owner not in self.excluded:
                return EXACT, owner
        need = self.cfg.threshold * self.cfg.num_perm
        for slot in self.lsh.query(sig):
            owner = int(self._owners[slot])
            if owner not in self.excluded and np.count_nonzero(self.lsh.signature(slot) == sig) >= need:
                return NEAR, owner
        return None

    def keep(self, key: str, sig: np.ndarray) -> int:
        """Index a new chunk; returns its provisional key."""
        slot = self._add(-(self._slots + 1), key, sig)
        return -(slot + 1)

    def settle(self, provisional: int, chunk_id: int) -> None:
        """The chunk of provisional key ``provisional`` was stored as ``chunk_id``."""
        self._owners[-provisional - 1] = chunk_id

    def real_id(self, owner: int) -> int | None:
        """The chunk id of ``owner``; None while its chunk is not stored yet."""
        if owner > 0:
            return owner
        real = int(self._owners[-owner - 1])
        return real if real > 0 else None


class _ExactKeys:
    """Exact keys -> the slots holding them, oldest first, with no Python object per key (objects
    that live as long as the index would pin the memory of every batch freed around them).

    A 20-byte digest's first 8 bytes go into a sorted uint64 array (the slot beside each) or, for
    the latest, a small dict merged into it when full; the digest itself is kept per slot in
    uint8 blocks and compared whole. Digests of other lengths (keys that are not sha1 hex) are
    kept in a plain dict.
    """

    def __init__(self) -> None:
        self._prefixes = np.empty(0, dtype=np.uint64)
        self._slots = np.empty(0, dtype=np.int64)
        self._recent: dict[int, list[int]] = {}
        self._recent_count = 0
        self._blocks: dict[int, np.ndarray] = {}  # slot // _BLOCK -> (_BLOCK, 20) digests
        self._other: dict[bytes, list[int]] = {}

    def add(self, digest: bytes, slot: int) -> None:
        if len(digest) != 20:
            self._other.setdefault(digest, []).append(slot)
            return
        block = self._blocks.get(slot // _BLOCK)
        if block is None:
            block = self._blocks[slot // _BLOCK] = np.zeros((_BLOCK, 20), dtype=np.uint8)
        block[slot % _BLOCK] = np.frombuffer(digest, dtype=np.uint8)
        self._recent.setdefault(int.from_bytes(digest[:8], "little"), []).append(slot)
        self._recent_count += 1
        if self._recent_count >= _RECENT_KEYS:
            self._merge()

    def slots(self, digest: bytes) -> list[int]:
        if len(digest) != 20:
            return self._other.get(digest, [])
        prefix = int.from_bytes(digest[:8], "little")
        found = list(self._recent.get(prefix, ()))
        if self._prefixes.size:
            lo = int(np.searchsorted(self._prefixes, np.uint64(prefix), "left"))
            hi = int(np.searchsorted(self._prefixes, np.uint64(prefix), "right"))
            found += self._slots[lo:hi].tolist()
        return sorted(s for s in found if self._blocks[s // _BLOCK][s % _BLOCK].tobytes() == digest)

    def _merge(self) -> None:
        prefixes = np.fromiter(
            (p for p, ss in self._recent.items() for _ in ss), np.uint64, self._recent_count
        )
        slots = np.fromiter((s for ss in self._recent.values() for s in ss), np.int64, self._recent_count)
        order = np.argsort(prefixes, kind="stable")
        at = np.searchsorted(self._prefixes, prefixes[order])
        self._prefixes = np.insert(self._prefixes, at, prefixes[order])
        self._slots = np.insert(self._slots, at, slots[order])
        self._recent, self._recent_count = {}, 0


_BLOCK = 4096  # digests per block of _ExactKeys (80 KB)
_RECENT_KEYS = 1 << 15  # exact keys held in a dict before merging into the sorted array


def _digest(key: str) -> bytes:
    """The 20 bytes of a hex sha1 exact key (other keys as their UTF-8 bytes)."""
    try:
        return bytes.fromhex(key) if len(key) == 40 else key.encode()
    except ValueError:
        return key.encode()


@dataclass
class Pending:
    """Chunk rows of a batch of files, waiting for one bulk insert."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    provisional: list[int] = field(default_factory=list)  # per row: its key when kept, else 0
    links: list[tuple[int, int]] = field(default_factory=list)  # (row position, key it duplicates)


def _resign(session: Session, ids: list[int], cfg: DedupConfig, tag: int) -> dict[int, np.ndarray]:
    """Signatures of chunks ``ids`` computed again from their stored text, and written back."""
    if not ids:
        return {}
    texts: dict[int, str] = {}
    for start in range(0, len(ids), _IDS_PER_QUERY):
        part = ids[start : start + _IDS_PER_QUERY]
        found = session.execute(select(schema.Chunk.id, schema.Chunk.text).where(schema.Chunk.id.in_(part)))
        texts.update((cid, text) for cid, text in found)  # not update(found): a Result has .keys()
    sigs = parallel_signatures([texts[cid] for cid in ids], cfg)
    table: Any = schema.Chunk.__table__
    session.connection().execute(
        update(table).where(table.c.id == bindparam("cid")).values(minhash=bindparam("blob")),
        [{"cid": cid, "blob": encode_signature(sig, tag)} for cid, sig in zip(ids, sigs, strict=True)],
    )
    return dict(zip(ids, sigs, strict=True))


def plan_units(
    project_id: int,
    file_id: int,
    prepared: tuple[list[dict[str, Any]], list[str], np.ndarray | None],
    index: DedupIndex,
    min_chars: int,
    pending: Pending,
    first: int = 0,
) -> Counter[str]:
    """Queue a file's units as chunk rows, marking duplicates and too-short ones; returns drop counts.

    ``first`` is the position in the file of the first unit (a large file comes in batches)."""
    units, keys, sigs = prepared
    dropped: Counter[str] = Counter()
    for k, (unit, key, sig) in enumerate(zip(units, keys, sigs if sigs is not None else [], strict=True)):
        row = dict(
            unit,
            project_id=project_id,
            file_id=file_id,
            idx=first + k,
            content_hash=key,
            minhash=encode_signature(sig, index.tag),
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
            index.settle(key, chunk_id)
    if pending.links:
        session.connection().execute(
            update(table).where(table.c.id == bindparam("cid")).values(duplicate_of=bindparam("dup")),
            [{"cid": ids[pos], "dup": index.real_id(key)} for pos, key in pending.links],
        )


def forget_file_chunks(session: Session, file_id: int) -> list[int]:
    """Delete a file's chunks (returning their ids); chunks elsewhere that were dropped as their
    duplicates come back, since what they duplicated is gone."""
    mine = select(schema.Chunk.id).where(schema.Chunk.file_id == file_id)
    old = list(session.scalars(mine))
    if old:
        # a subquery, not the ids bound one by one: a file of 800k chunks is past SQLite's variable limit
        session.execute(
            update(schema.Chunk)
            .where(schema.Chunk.duplicate_of.in_(mine))
            .values(drop_reason=None, duplicate_of=None)
        )
        session.execute(delete(schema.Chunk).where(schema.Chunk.file_id == file_id))
    return old
