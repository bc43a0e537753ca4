"""The memory's two choices, measured: the vector index (FAISS flat vs HNSW) and hybrid retrieval.

1. Index: 100k "random-ish" vectors (384 wide like all-MiniLM-L6-v2: 1,000 cluster centres plus
   noise, L2-normalised, so neighbours are near-ties as real embeddings are), 500 queries (perturbed
   copies of stored vectors). FAISS ``IndexFlatIP`` (exact, what memory/index.py uses) against
   ``IndexHNSWFlat`` (M 32, efSearch 64, inner product): build seconds, recall@10 against the exact
   answer, and milliseconds per query (one query at a time, as recall asks), with the ratio of the two.
2. Hybrid: the quickstart sample's two documents (handbook.md, troubleshooting.pdf) ingested
   (``api.ingest``) and embedded (``memory sync``, the real embedder), each question of its ``qa.csv``
   recalled with hybrid on and off. The gold chunk of a
   question is the one holding the largest share of its reference answer's words (ties: none counted
   as gold, the question is skipped). recall@1 = the top item is the gold chunk.

One thread; the machine is shared, so read the ratios, not the absolute times.

    python bench/memory.py [--n 100000] [--embedder all-MiniLM-L6-v2] [--skip-index] [--skip-hybrid]
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "quickstart" / "data"
WORD = re.compile(r"\w+")
STOP = set("the a an and or of to in on for is are it its with by be as at this that from you your".split())


def clustered(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.standard_normal((1000, dim)).astype("float32")
    x = centres[rng.integers(0, 1000, n)] + 0.6 * rng.standard_normal((n, dim)).astype("float32")
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def per_query(index: object, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    found, start = [], time.perf_counter()
    for q in queries:
        found.append(index.search(q.reshape(1, -1), k)[1][0])  # type: ignore[attr-defined]
    return np.array(found), (time.perf_counter() - start) / len(queries) * 1000


def bench_index(n: int, dim: int = 384, k: int = 10) -> None:
    import faiss

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    data = clustered(n, dim, rng)
    queries = data[rng.integers(0, n, 500)] + 0.05 * rng.standard_normal((500, dim)).astype("float32")
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    rows = []
    for name, index in (
        ("flat (exact)", faiss.IndexFlatIP(dim)),
        ("hnsw M32 ef64", faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)),
    ):
        start = time.perf_counter()
        index.add(data)
        built = time.perf_counter() - start
        if hasattr(index, "hnsw"):
            index.hnsw.efSearch = 64
        found, ms = per_query(index, queries, k)
        rows.append((name, built, found, ms))
    truth = rows[0][2]
    print(f"index: {n} vectors x {dim}, 500 queries, k={k}, one thread")
    for name, built, found, ms in rows:
        recall = np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth, strict=True)])
        print(f"  {name:15s} build {built:6.2f} s  recall@{k} {recall:.3f}  {ms:7.3f} ms/query")
    print(f"  flat / hnsw time per query: {rows[0][3] / rows[1][3]:.1f}x")


def content(text: str) -> set[str]:
    return {w for w in WORD.findall(text.lower()) if w not in STOP}


def bench_hybrid(embedder: str) -> None:
    os.environ["FTF_HOME"] = tempfile.mkdtemp(prefix="ftf-bench-memory-")
    from finetuneflow import api
    from finetuneflow.memory.config import MemoryConfig
    from finetuneflow.memory.store import Memory

    # the documents only: qa.csv's own Q&A chunks would make every question find itself
    api.ingest([SAMPLE / "handbook.md", SAMPLE / "troubleshooting.pdf"], project="bench")
    start = time.perf_counter()
    memory = Memory("bench", MemoryConfig(embedder=embedder))
    added = memory.sync()["added"]
    print(f"hybrid: {added} sample chunks embedded by {embedder} in {time.perf_counter() - start:.1f} s")
    chunks = {i["id"]: content(i["text"]) for i in memory.listing(kind="document")}
    with (SAMPLE / "qa.csv").open() as fh:
        qa = [(row["question"], row["answer"]) for row in csv.DictReader(fh)]
    modes = {
        "vector only": Memory("bench", MemoryConfig(embedder=embedder, hybrid=False)),
        "hybrid": Memory("bench", MemoryConfig(embedder=embedder, hybrid=True)),
    }
    hits = dict.fromkeys(modes, 0)
    asked = 0
    for question, answer in qa:
        words = content(answer)
        share = {i: len(words & c) / max(len(words), 1) for i, c in chunks.items()}
        best = sorted(share.values())[-2:]
        if len(best) == 2 and best[0] == best[1]:
            continue  # no single gold chunk
        gold = max(share, key=share.__getitem__)
        asked += 1
        for name, mem in modes.items():
            hits[name] += mem.recall(question, k=1)[0]["id"] == gold
    for name, n in hits.items():
        print(f"  {name:12s} recall@1 {n / asked:.2f} ({n}/{asked} questions)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--embedder", default="all-MiniLM-L6-v2")
    parser.add_argument("--skip-index", action="store_true")
    parser.add_argument("--skip-hybrid", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    if not args.skip_index:
        bench_index(args.n)
    if not args.skip_hybrid:
        bench_hybrid(args.embedder)


if __name__ == "__main__":
    main()
