"""The vector index: FAISS's exact inner-product index over L2-normalised embeddings (so cosine),
keyed by memory item id, kept in one file in the project folder.

FAISS rather than sqlite-vec: this Python's ``sqlite3`` cannot load extensions (sqlite-vec would need
pysqlite3-binary or apsw beside SQLAlchemy's driver), and an index in the database would tie it to
SQLite while the records may live in PostgreSQL. Flat rather than HNSW: exact (recall 1.0), items
removable by id (FAISS's HNSW cannot remove), and fast enough for a personal memory: at 100k vectors
34 ms a query on one thread, against HNSW's 0.7 ms at recall@10 0.905 after a 47 s build
(bench/memory.py, a shared machine).

The file is derived from the database. It is written after the database commit, atomically (a temp
file renamed over it), with a sidecar naming the embedder; :meth:`VectorIndex.reconcile` makes it
agree with the database again after a crash between the two writes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

INDEX_FILE = "index.faiss"
META_FILE = "index.json"


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - the memory extra is missing
        raise RuntimeError("the memory needs faiss-cpu: pip install 'finetuneflow[memory]'") from err
    return faiss


class VectorIndex:
    """Exact cosine search over (id, vector) pairs, saved as ``folder/index.faiss``."""

    def __init__(self, folder: Path, embedder: str, dim: int) -> None:
        self.folder, self.embedder, self.dim = folder, embedder, dim
        faiss = _faiss()
        self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.loaded = False  # True when it came from the file as saved

    @classmethod
    def open(cls, folder: Path, embedder: str, dim: int) -> VectorIndex:
        """The saved index of ``folder``, or an empty one when there is none, it is unreadable, or it
        was built by another embedder (the caller reconciles it with the database either way)."""
        out = cls(folder, embedder, dim)
        meta_path, path = folder / META_FILE, folder / INDEX_FILE
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("embedder") == embedder and meta.get("dim") == dim:
                index = _faiss().read_index(str(path))
                if index.ntotal == meta.get("count"):
                    out.index, out.loaded = index, True
        except (OSError, ValueError, RuntimeError):
            pass  # missing or damaged: rebuilt from the database
        return out

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> set[int]:
        """The item ids in the index."""
        return set(_faiss().vector_to_array(self.index.id_map).tolist())

    def add(self, ids: Iterable[int], vectors: np.ndarray) -> None:
        """Add ``vectors`` (n, dim) float32 as ``ids`` (replacing any already there)."""
        id_arr = np.asarray(list(ids), dtype="int64")
        if len(id_arr) == 0:
            return
        self.remove(id_arr.tolist())
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype="float32"), id_arr)

    def remove(self, ids: Iterable[int]) -> None:
        id_arr = np.asarray(list(ids), dtype="int64")
        if len(id_arr):
            self.index.remove_ids(id_arr)

    def search(self, vector: np.ndarray, n: int) -> dict[int, float]:
        """The ``n`` nearest items to ``vector`` (dim,): id -> cosine."""
        if len(self) == 0:
            return {}
        sims, ids = self.index.search(np.asarray(vector, dtype="float32").reshape(1, -1), min(n, len(self)))
        return {int(i): float(s) for i, s in zip(ids[0], sims[0], strict=True) if i >= 0}

    def save(self) -> None:
        """Write the index and its sidecar atomically (temp files renamed over the old ones)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / (INDEX_FILE + ".tmp")
        _faiss().write_index(self.index, str(tmp))
        os.replace(tmp, self.folder / INDEX_FILE)
        meta = {"embedder": self.embedder, "dim": self.dim, "count": len(self)}
        tmp_meta = self.folder / (META_FILE + ".tmp")
        tmp_meta.write_text(json.dumps(meta))
        os.replace(tmp_meta, self.folder / META_FILE)

    def reconcile(self, vectors: dict[int, np.ndarray]) -> dict[str, int]:
        """Make the index hold exactly ``vectors`` (id -> vector, from the database): add the missing,
        drop the extra. Returns how many of each (both 0: it already agreed)."""
        held = self.ids()
        missing = [i for i in vectors if i not in held]
        extra = [i for i in held if i not in vectors]
        self.remove(extra)
        if missing:
            self.add(missing, np.stack([vectors[i] for i in missing]))
        return {"missing": len(missing), "extra": len(extra)}

    def size_bytes(self) -> int:
        path = self.folder / INDEX_FILE
        return path.stat().st_size if path.exists() else 0
