"""A project's memory: :class:`Memory` teaches, recalls, corrects, forgets and purges items, keeping
the vector index file in step with the database records.

Every write commits the record (with its embedding) first, then updates and saves the index; an
item is acknowledged (the call returns) only after both. A crash between the two leaves a record
the index lacks: opening the memory compares the two and repairs the index from the records.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import numpy as np

from finetuneflow import paths
from finetuneflow.errors import ConfigError
from finetuneflow.memory import items
from finetuneflow.memory.bm25 import BM25
from finetuneflow.memory.config import DEFAULT_IMPORTANCE, KINDS, MemoryConfig
from finetuneflow.memory.embedding import Embedder, as_vector, load, project_embedder, record_embedder
from finetuneflow.memory.index import VectorIndex
from finetuneflow.memory.rank import recency, score
from finetuneflow.state import session_scope
from finetuneflow.state.repo import get_or_create_project
from finetuneflow.state.schema import MemoryItem

SYNC_BATCH = 64


def check_importance(value: float) -> float:
    if isinstance(value, bool) or not 0 <= float(value) <= 1:
        raise ValueError(f"importance is a number from 0 to 1, not {value!r}")
    return float(value)


class Memory:
    """The memory of ``project``: records in the database, a vector index file derived from them,
    and a BM25 index over the texts built in process."""

    def __init__(
        self, project: str, config: MemoryConfig | None = None, embedder: Embedder | None = None
    ) -> None:
        self.config = config or MemoryConfig()
        if problems := self.config.problems():
            raise ConfigError(problems, "memory settings")
        self.project = project
        with session_scope() as s:
            self.project_id = get_or_create_project(s, project).id
        self.embedder = embedder or load(project_embedder(project, self.config.embedder))
        self.folder = paths.project_dir(project) / "memory"
        self.index = VectorIndex.open(self.folder, self.embedder.name, self.embedder.dim)
        self.bm25: BM25 | None = None
        self.repaired: dict[str, int] = {"missing": 0, "extra": 0}
        self._seen: tuple[Any, ...] | None = None
        self.refresh()

    # --- keeping the index in step --------------------------------------------------------------

    def refresh(self) -> None:
        """Bring the indexes in step with the database when it changed since we last looked (another
        process wrote, or a crash left the index behind)."""
        with session_scope() as s:
            seen = items.fingerprint(s, self.project_id)
            if seen == self._seen:
                return
            vectors = items.vectors(s, self.project_id, self.embedder.name)
            texts = items.texts(s, self.project_id) if self.config.hybrid else []
        fixed = self.index.reconcile(vectors)
        if any(fixed.values()) or not self.index.loaded:
            self.index.save()
            self.index.loaded = True
        self.repaired = {k: self.repaired[k] + v for k, v in fixed.items()}
        self.bm25 = BM25() if self.config.hybrid else None
        for item_id, text in texts:
            self.bm25.add(item_id, text)  # type: ignore[union-attr]
        self._seen = seen

    def _indexed(
        self, added: Sequence[tuple[int, str, np.ndarray]], removed: Sequence[int] = (), save: bool = True
    ) -> None:
        """After a commit: put ``added`` (id, text, vector) in the indexes, take ``removed`` out, and
        save the index file (``save`` False: a batch of a sync, which saves once at its end)."""
        self.index.remove(removed)
        if added:
            self.index.add([a[0] for a in added], np.stack([a[2] for a in added]))
        if save:
            self.index.save()
        if self.bm25 is not None:
            for item_id in removed:
                self.bm25.remove(item_id)
            for item_id, text, _ in added:
                self.bm25.add(item_id, text)
        with session_scope() as s:
            self._seen = items.fingerprint(s, self.project_id)

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.asarray(self.embedder.embed(list(texts)), dtype="float32")
        if vectors.shape != (len(texts), self.embedder.dim):
            raise RuntimeError(f"embedder {self.embedder.name} returned shape {vectors.shape}")
        return vectors

    # --- writing --------------------------------------------------------------------------------

    def add(
        self,
        text: str,
        kind: str = "fact",
        importance: float | None = None,
        tags: Sequence[str] = (),
        source: str | None = None,
        expires_in_days: float | None = None,
        **links: Any,
    ) -> dict[str, Any]:
        """Store one item (``links``: chunk_id, exchange_id, corrects, meta); returns it once it is in
        the database and the index."""
        text = text.strip()
        if not text:
            raise ValueError("an empty item: give the text to remember")
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
        weight = check_importance(DEFAULT_IMPORTANCE[kind] if importance is None else importance)
        vector = self._embed([text])[0]
        expires = items.now() + timedelta(days=expires_in_days) if expires_in_days is not None else None
        with session_scope() as s:
            row = MemoryItem(
                project_id=self.project_id,
                kind=kind,
                text=text,
                importance=weight,
                tags=list(tags),
                source=source or kind,
                embedding=vector.tobytes(),
                embedder=self.embedder.name,
                expires_at=expires,
                meta=links.pop("meta", {}),
                **links,
            )
            s.add(row)
            s.flush()
            if row.corrects is not None:
                items.get(s, self.project_id, row.corrects).superseded_by = row.id
            out = items.public(row)
        record_embedder(self.project, self.embedder.name)
        self._indexed([(out["id"], text, vector)])
        return out

    def teach(
        self,
        text: str,
        importance: float | None = None,
        tags: Sequence[str] = (),
        source: str | None = None,
        expires_in_days: float | None = None,
    ) -> dict[str, Any]:
        """Teach a fact (importance 0.75 unless given)."""
        return self.add(text, "fact", importance, tags, source or "taught", expires_in_days)

    def correct(self, target: int | str, new_text: str, importance: float | None = None) -> dict[str, Any]:
        """Correct item ``target`` (an id, or the text of a query whose best match is the item): a new
        correction item replaces it in recall; the old one stays, pointing to it.

        Raises:
            LookupError: no such id, or nothing similar enough to the query (``match_threshold``).
        """
        old = self._target(target)
        tags = [*old["tags"], "correction"] if "correction" not in old["tags"] else old["tags"]
        return self.add(
            new_text, "correction", importance, tags, f"correction of #{old['id']}", corrects=old["id"]
        )

    def _target(self, target: int | str) -> dict[str, Any]:
        if isinstance(target, int):
            with session_scope() as s:
                return items.public(items.get(s, self.project_id, target))
        hits = [h for h in self.recall(target, k=5) if h["superseded_by"] is None]
        if not hits or hits[0]["parts"]["vector"] < self.config.match_threshold:
            raise LookupError(f"nothing in memory matches {target!r} closely enough to correct")
        return hits[0]

    def remember_exchange(
        self,
        question: str,
        answer: str,
        retrieved_ids: Sequence[Any] = (),
        rating: int | None = None,
        exchange_id: int | None = None,
    ) -> dict[str, Any]:
        """Keep a chat question and its answer as an interaction item."""
        meta = {"retrieved": list(retrieved_ids), "rating": rating}
        return self.add(
            f"Q: {question}\nA: {answer}",
            "interaction",
            None,
            ("chat",),
            "chat",
            exchange_id=exchange_id,
            meta=meta,
        )

    def forget(self, item_id: int) -> dict[str, Any]:
        """Forget an item (soft: it leaves recall and the index; ``purge`` deletes it)."""
        with session_scope() as s:
            row = items.get(s, self.project_id, item_id)
            row.forgotten_at = items.now()
            out = items.public(row)
        self._indexed([], [item_id])
        return out

    def purge(self) -> dict[str, Any]:
        """Delete the forgotten and expired items for good."""
        with session_scope() as s:
            ids = items.purge(s, self.project_id, items.now())
        self._indexed([], ids)
        return {"purged": len(ids), "ids": ids}

    def sync(self, on_progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
        """Embed the project's ingested chunks that are not in memory yet (as documents), and
        re-embed the items another embedder made. Commits batch by batch: an interrupted sync resumes."""
        with session_scope() as s:
            todo = [
                (c.id, c.text, items.chunk_source(c, path))
                for c, path in items.unsynced_chunks(s, self.project_id)
            ]
            stale = [(r.id, r.text) for r in items.stale(s, self.project_id, self.embedder.name)]
        for start in range(0, len(todo), SYNC_BATCH):
            self._sync_chunks(todo[start : start + SYNC_BATCH])
            if on_progress:
                on_progress(min(start + SYNC_BATCH, len(todo)), len(todo))
        for start in range(0, len(stale), SYNC_BATCH):
            self._reembed(stale[start : start + SYNC_BATCH])
        if todo or stale:
            self.index.save()  # once: a crash before it is repaired from the committed batches
            record_embedder(self.project, self.embedder.name)
        return {"added": len(todo), "reembedded": len(stale)}

    def _sync_chunks(self, batch: list[tuple[int, str, str]]) -> None:
        vectors = self._embed([text for _, text, _ in batch])
        added = []
        with session_scope() as s:
            for (chunk_id, text, source), vector in zip(batch, vectors, strict=True):
                row = MemoryItem(
                    project_id=self.project_id,
                    kind="document",
                    text=text,
                    importance=DEFAULT_IMPORTANCE["document"],
                    tags=["document"],
                    source=source,
                    chunk_id=chunk_id,
                    embedding=vector.tobytes(),
                    embedder=self.embedder.name,
                    meta={},
                )
                s.add(row)
                s.flush()
                added.append((row.id, text, vector))
        self._indexed(added, save=False)

    def _reembed(self, batch: list[tuple[int, str]]) -> None:
        vectors = self._embed([text for _, text in batch])
        with session_scope() as s:
            for (item_id, _), vector in zip(batch, vectors, strict=True):
                row = items.get(s, self.project_id, item_id)
                row.embedding, row.embedder = vector.tobytes(), self.embedder.name
        self._indexed([(i, t, v) for (i, t), v in zip(batch, vectors, strict=True)], save=False)

    # --- reading --------------------------------------------------------------------------------

    def recall(self, query: str, k: int | None = None, kinds: Sequence[str] = ()) -> list[dict[str, Any]]:
        """The ``k`` best items for ``query``, best first, each with its score and the parts of it
        (``parts``: vector, bm25, similarity, importance, recency, superseded)."""
        if not query.strip():
            raise ValueError("recall what? give a query")
        self.refresh()
        cfg, qv = self.config, self._embed([query])[0]
        found = set(self.index.search(qv, cfg.candidates))
        bm25 = self.bm25.top(query, cfg.candidates) if self.bm25 is not None else {}
        best_bm25 = max(bm25.values(), default=0.0) or 1.0
        at = items.now()
        with session_scope() as s:
            rows = [
                r
                for r in items.by_ids(s, self.project_id, sorted(found | set(bm25)))
                if not items.expired(r, at) and (not kinds or r.kind in kinds)
            ]
            scored = []
            for row in rows:
                same = row.embedder == self.embedder.name and row.embedding is not None
                cosine = float(as_vector(row.embedding) @ qv) if same else 0.0
                when = items.aware(row.updated_at) or at
                parts = score(
                    cfg,
                    cosine,
                    bm25.get(row.id, 0.0) / best_bm25,
                    row.importance,
                    recency(when, at, cfg.half_life_days),
                    row.superseded_by is not None,
                )
                scored.append({**items.public(row), "score": round(parts.score, 4), "parts": parts.as_dict()})
        scored.sort(key=lambda h: (-h["score"], -h["id"]))
        for hit in scored:
            hit.pop("meta", None)
        return scored[: k or cfg.k]

    def listing(
        self,
        kind: str | None = None,
        tag: str | None = None,
        forgotten: bool = False,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Items newest first, filtered (see :func:`items.listing`)."""
        with session_scope() as s:
            return [items.public(r) for r in items.listing(s, self.project_id, kind, tag, forgotten, limit)]

    def history(self, item_id: int) -> list[dict[str, Any]]:
        """Item ``item_id`` and every correction after it, oldest first."""
        with session_scope() as s:
            chain = [items.get(s, self.project_id, item_id, live=False)]
            while chain[-1].superseded_by is not None:
                chain.append(items.get(s, self.project_id, chain[-1].superseded_by, live=False))
            return [items.public(r) for r in chain]

    def status(self) -> dict[str, Any]:
        """Counts by kind, sizes, the embedder and the index's health."""
        self.refresh()
        with session_scope() as s:
            counts = items.counts(s, self.project_id, items.now())
            expected = len(items.vectors(s, self.project_id, self.embedder.name))
            stale = len(items.stale(s, self.project_id, self.embedder.name))
        return {
            **counts,
            "embedder": self.embedder.name,
            "dim": self.embedder.dim,
            "index": {
                "vectors": len(self.index),
                "expected": expected,
                "ok": len(self.index) == expected and stale == 0,
                "needs_sync": stale,
                "repaired": self.repaired,
                "bytes": self.index.size_bytes(),
                "file": str(self.folder / "index.faiss"),
            },
            "hybrid": self.config.hybrid,
        }
