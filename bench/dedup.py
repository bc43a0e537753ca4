"""Near-duplicate detection: our numpy MinHash + LSH against datasketch, on one synthetic corpus.

Measures, in one process on the same texts: (1) ours, ``parallel_signatures`` + ``near_duplicates``
(all cores), 128-slot signatures by one-permutation hashing with optimal densification (each slot
agrees with probability = Jaccard, as one of 128 independent permutations does, so the LSH bands
and the threshold mean the same; see ``finetuneflow.text.dedup``); (2) the peer, datasketch
``MinHash(num_perm=128)`` over the same character 5-grams of the same normalized texts, indexed
in ``MinHashLSH(threshold=0.8)``, each text queried before it is inserted and pointed at the
earliest kept candidate whose estimated Jaccard reaches the threshold.
Both timings start from raw texts (normalization included). For each it prints seconds, docs/s,
MB/s, and recall / precision of the flagged documents against the generated ground truth, then
the throughput ratio ours / datasketch. Target (printed, not asserted): >= 2x at equal or better
recall.

The corpus is deterministic for a seed: documents of 150-600 Zipf-distributed words with sentence
punctuation; a ``--dup-rate`` share of them are copies of an earlier original document with a few word swaps,
insertions, deletions and replacements plus case and whitespace changes (true 5-gram Jaccard
mostly >= 0.8, reported below).

    python bench/dedup.py [--docs 10000] [--dup-rate 0.3] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from finetuneflow.text.dedup import DedupConfig, near_duplicates, normalize, parallel_signatures

TARGET_RATIO = 2.0
# Recall counts as "equal" within this: both sides draw different random hash functions, so on a
# few thousand copies their recalls differ by about this much by chance alone.
RECALL_TOLERANCE = 0.01


@dataclass
class Corpus:
    texts: list[str]
    source: dict[int, int]  # duplicate doc -> the earlier doc it was made from (ground truth)

    def root(self, doc: int) -> int:
        """The original at the start of ``doc``'s chain of copies."""
        while doc in self.source:
            doc = self.source[doc]
        return doc


def make_vocab(rng: random.Random, size: int = 20000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choices(letters, k=rng.randint(2, 11))) for _ in range(size)]


def fresh_doc(rng: random.Random, vocab: list[str], cum_weights: list[float]) -> str:
    """150-600 words in sentences of 6-20 words, capitalised and full-stopped, a comma here and there."""
    words = rng.choices(vocab, cum_weights=cum_weights, k=rng.randint(150, 600))
    sentences, start = [], 0
    while start < len(words):
        end = min(len(words), start + rng.randint(6, 20))
        part = words[start:end]
        if len(part) > 4 and rng.random() < 0.4:
            part[2] += ","
        sentences.append(" ".join(part).capitalize() + ".")
        start = end
    return " ".join(sentences)


def near_copy(text: str, rng: random.Random, vocab: list[str]) -> str:
    """``text`` with up to one word edit per 20 words, plus case and whitespace noise."""
    tokens = text.split()
    for _ in range(rng.randint(1, max(1, len(tokens) // 20))):
        i = rng.randrange(len(tokens) - 1)
        kind = rng.randrange(4)
        if kind == 0:
            tokens[i], tokens[i + 1] = tokens[i + 1], tokens[i]
        elif kind == 1:
            tokens.insert(i, rng.choice(vocab))
        elif kind == 2:
            del tokens[i]
        else:
            tokens[i] = rng.choice(vocab)
    if rng.random() < 0.3:
        tokens = [t.upper() if rng.random() < 0.1 else t for t in tokens]
    glue = [" "] * (len(tokens) - 1)
    if rng.random() < 0.3:
        glue = [rng.choice(["  ", "\n", " \t "]) if rng.random() < 0.05 else g for g in glue]
    return tokens[0] + "".join(g + t for g, t in zip(glue, tokens[1:], strict=True))


def make_corpus(docs: int, dup_rate: float, seed: int) -> Corpus:
    rng = random.Random(seed)
    vocab = make_vocab(rng)
    cum_weights = list(np.cumsum(1.0 / np.arange(1, len(vocab) + 1)))  # Zipf: a few words are everywhere
    texts: list[str] = []
    source: dict[int, int] = {}
    originals: list[int] = []
    for i in range(docs):
        if originals and rng.random() < dup_rate:
            # Copies are made from originals only: a copy of a copy may drift below the threshold from
            # the cluster's first member, which both methods compare against, blurring what recall measures.
            source[i] = rng.choice(originals)
            texts.append(near_copy(texts[source[i]], rng, vocab))
        else:
            originals.append(i)
            texts.append(fresh_doc(rng, vocab, cum_weights))
    return Corpus(texts, source)


def shingles(norm: str, k: int) -> set[bytes]:
    """The character k-grams our signatures hash, as bytes for datasketch; a short text is one shingle."""
    if 0 < len(norm) < k:
        return {norm.encode()}
    return {norm[i : i + k].encode() for i in range(len(norm) - k + 1)}


def true_jaccard(a: str, b: str, k: int) -> float:
    sa, sb = shingles(normalize(a), k), shingles(normalize(b), k)
    return len(sa & sb) / len(sa | sb)


def ours(texts: list[str], cfg: DedupConfig) -> list[int | None]:
    return near_duplicates(parallel_signatures(texts, cfg), cfg)


def peer_datasketch(texts: list[str], cfg: DedupConfig) -> list[int | None]:
    """The same walk with datasketch: query first, insert only what matched nothing."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    kept: dict[int, MinHash] = {}
    found: list[int | None] = []
    for i, text in enumerate(texts):
        sketch = MinHash(num_perm=cfg.num_perm, seed=cfg.seed)
        sketch.update_batch(shingles(normalize(text), cfg.shingle))
        # Keys are row numbers, so sorted candidates are the oldest kept first, as in ours.
        candidates = sorted(lsh.query(sketch))
        match = next((c for c in candidates if sketch.jaccard(kept[c]) >= cfg.threshold), None)
        found.append(match)
        if match is None:
            lsh.insert(i, sketch)
            kept[i] = sketch
    return found


def measure(
    name: str, run: Callable[[list[str], DedupConfig], list[int | None]], corpus: Corpus, cfg: DedupConfig
) -> tuple[float, float]:
    """Time ``run`` and print its line; returns (seconds, recall)."""
    start = time.perf_counter()
    found = run(corpus.texts, cfg)
    seconds = time.perf_counter() - start
    flagged = {i for i, match in enumerate(found) if match is not None}
    truth = set(corpus.source)
    hits = flagged & truth
    recall = len(hits) / max(1, len(truth))
    precision = len(hits) / max(1, len(flagged))
    same_cluster = sum(corpus.root(i) == corpus.root(m) for i, m in enumerate(found) if m is not None)
    megabytes = sum(len(t.encode()) for t in corpus.texts) / 1e6
    print(
        f"{name:<12} {seconds:8.2f} s {len(found) / seconds:9.0f} docs/s {megabytes / seconds:7.2f} MB/s"
        f"   recall {recall:.4f}  precision {precision:.4f}"
        f"  (flagged {len(flagged)}, pointed into the right cluster {same_cluster})"
    )
    return seconds, recall


def describe_pairs(corpus: Corpus, cfg: DedupConfig) -> None:
    """Print how similar the generated near-copies really are (the ground truth's difficulty)."""
    pair_j = [true_jaccard(corpus.texts[d], corpus.texts[s], cfg.shingle) for d, s in corpus.source.items()]
    if pair_j:
        print(
            f"  true 5-gram Jaccard of copy pairs: median {statistics.median(pair_j):.3f}, "
            f"min {min(pair_j):.3f}, >= {cfg.threshold}: {np.mean(np.array(pair_j) >= cfg.threshold):.1%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=10000)
    parser.add_argument("--dup-rate", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg = DedupConfig()
    corpus = make_corpus(args.docs, args.dup_rate, args.seed)
    megabytes = sum(len(t.encode()) for t in corpus.texts) / 1e6
    print(f"corpus: {len(corpus.texts)} docs, {megabytes:.1f} MB, {len(corpus.source)} near-copies")
    describe_pairs(corpus, cfg)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"  config {cfg}, {cores} cores for ours, datasketch single process")
    ours_s, ours_recall = measure("ours", ours, corpus, cfg)
    peer_s, peer_recall = measure("datasketch", peer_datasketch, corpus, cfg)
    ratio = peer_s / ours_s
    met = ratio >= TARGET_RATIO and ours_recall >= peer_recall - RECALL_TOLERANCE
    print(
        f"throughput ratio ours/datasketch: {ratio:.2f}x "
        f"recall difference {ours_recall - peer_recall:+.4f}\n"
        f"target >= {TARGET_RATIO:.0f}x at equal (+-{RECALL_TOLERANCE}) or better recall: "
        + ("met" if met else "NOT met")
    )


if __name__ == "__main__":
    main()
