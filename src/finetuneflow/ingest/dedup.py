"""Exact and near-duplicate detection for texts: MinHash signatures and banded LSH, in numpy.

Exact duplicates share :func:`exact_key` (sha1 of the normalized text). Near duplicates are found
in three steps, each usable alone:

1. :func:`signatures` (or :func:`parallel_signatures`) turns each text into ``num_perm`` MinHash
   values over character ``shingle``-grams of its normalized form;
2. :class:`LSHIndex` buckets signatures by bands so that only likely pairs are compared;
3. :func:`near_duplicates` walks a batch in order and points each duplicate at the first kept item
   it resembles, whose estimated Jaccard similarity reaches ``threshold``.

Hashing scheme (all vectorised, no Python loop per shingle): the normalized text is viewed as an
array of code points (UTF-32), every window of ``shingle`` code points gets a 64-bit polynomial
hash, mixed and cut to 31 bits (``x``); permutation ``i`` is ``(a_i * x + b_i) mod p`` with the
Mersenne prime ``p = 2**31 - 1``, so every product fits in 62 bits of a uint64.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from finetuneflow.config import setting

_P = (1 << 31) - 1  # Mersenne prime: "mod p" is two shifts, masks and adds instead of a division
_P64 = np.uint64(_P)
_P32 = np.uint32(_P)
_SHIFT31_64 = np.uint64(31)
_SHIFT31_32 = np.uint32(31)
EMPTY_SLOT = np.uint32(0xFFFFFFFF)  # above every hash value (< 2**31), so empty texts match no text
_POLY = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the polynomial shingle hash
_MIX1 = np.uint64(0xFF51AFD7ED558CCD)  # MurmurHash3 finalizer constants: spread the polynomial's
_MIX2 = np.uint64(0xC4CEB9FE1A85EC53)  # weak low bits over the 31 bits we keep
_MASK64 = (1 << 64) - 1
# Rows of the (shingles x num_perm) matrix hashed at once: 1024 x 128 uint64 = 1 MiB stays in cache.
_BLOCK_ROWS = 1024
# Texts normalized and shingled together: bounds the code-point and window arrays (~50 MB at 2 KB/text).
_CHUNK_TEXTS = 1000
# Below this many texts, starting worker processes costs more than it saves.
POOL_MIN_TEXTS = 2000
_PUNCTUATION = re.compile(r"[^\w\s]+")


@dataclass
class DedupConfig:
    """Settings of near-duplicate detection."""

    num_perm: int = setting(128, "MinHash permutations per signature; more is slower but more precise.")
    shingle: int = setting(5, "Length of the character n-grams compared (after normalization).")
    threshold: float = setting(0.8, "Estimated Jaccard similarity from which two texts are duplicates.")
    seed: int = setting(1, "Seed of the permutations; signatures are only comparable under one seed.")

    def problems(self) -> list[str]:
        """Every invalid value, with the fix."""
        found = []
        if self.num_perm < 16:
            found.append(f"num_perm: {self.num_perm} is too few for a useful estimate; use >= 16 (e.g. 128)")
        if not 1 <= self.shingle <= 32:
            found.append(f"shingle: {self.shingle} is out of range; use 1..32 (5 suits prose)")
        if not 0 < self.threshold < 1:
            found.append(f"threshold: {self.threshold} must be strictly between 0 and 1 (e.g. 0.8)")
        return found


def normalize(text: str) -> str:
    """Canonical form compared by both exact and near-duplicate detection.

    NFKC (full-width and ligature forms become plain ones), casefold, every run of punctuation or
    symbols (anything neither a word character nor space) becomes a space, then whitespace runs
    collapse to one space and the ends are stripped. So "Hello,  World!" and "hello world" are
    equal, while "don't" ("don t") and "dont" still differ.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PUNCTUATION.sub(" ", text).split())


def exact_key(text: str) -> str:
    """Hex sha1 of ``normalize(text)``: equal for texts differing only in case, spacing, punctuation."""
    return hashlib.sha1(normalize(text).encode("utf-8", "surrogatepass")).hexdigest()


def signatures(texts: Sequence[str], cfg: DedupConfig) -> np.ndarray:
    """MinHash signatures of ``texts``: uint32 array of shape (len(texts), cfg.num_perm).

    Texts shorter than ``cfg.shingle`` (after normalization) count as one shingle; an empty text
    gets :data:`EMPTY_SLOT` in every slot.
    """
    out = np.full((len(texts), cfg.num_perm), EMPTY_SLOT, dtype=np.uint32)
    a, b = _permutations(cfg)
    for start in range(0, len(texts), _CHUNK_TEXTS):
        chunk = [normalize(t) for t in texts[start : start + _CHUNK_TEXTS]]
        docs, hashes = _shingle_hashes(chunk, cfg.shingle)
        _min_hash_into(out[start : start + len(chunk)], docs, hashes, a, b)
    return out


def parallel_signatures(texts: Sequence[str], cfg: DedupConfig, workers: int = 0) -> np.ndarray:
    """:func:`signatures` computed in worker processes; identical results.

    ``workers=0`` uses every core this process may run on. Fewer than :data:`POOL_MIN_TEXTS` texts,
    or one worker, are done in this process, where start-up would cost more than it saves.

    Raises:
        ValueError: ``workers`` is negative.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0 = all cores), got {workers}")
    workers = workers or _available_cores()
    if workers == 1 or len(texts) < POOL_MIN_TEXTS:
        return signatures(texts, cfg)
    # A few shards per worker even out uneven text lengths.
    shards = list(_shards(texts, workers * 4))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(signatures, shards, [cfg] * len(shards)))
    return np.vstack(parts)


def band_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) of an LSH index, bands * rows <= num_perm, for a Jaccard ``threshold``.

    Picks the pair minimising the equally weighted areas of false positives (probability that a pair
    below the threshold shares a band) and false negatives (a pair above it shares none), the same
    criterion as datasketch's ``MinHashLSH``; the integrals are done by Simpson's rule.
    """
    pairs = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)])
    bands, rows = pairs[:, :1].astype(float), pairs[:, 1:].astype(float)
    below = np.linspace(0.0, threshold, 1001)
    above = np.linspace(threshold, 1.0, 1001)
    false_pos = _simpson(1 - (1 - below**rows) ** bands, threshold)
    false_neg = _simpson((1 - above**rows) ** bands, 1.0 - threshold)
    best = int(np.argmin(0.5 * false_pos + 0.5 * false_neg))
    return int(pairs[best, 0]), int(pairs[best, 1])


class LSHIndex:
    """Signatures bucketed by bands: two signatures are candidates when one band is equal throughout."""

    def __init__(self, cfg: DedupConfig) -> None:
        self.num_perm = cfg.num_perm
        self.bands, self.rows = band_params(cfg.threshold, cfg.num_perm)
        self._tables: list[dict[bytes, list[int]]] = [{} for _ in range(self.bands)]
        self._order: dict[int, int] = {}  # key -> insertion rank, so query answers oldest first

    def __len__(self) -> int:
        return len(self._order)

    def add(self, key: int, sig: np.ndarray) -> None:
        """Index signature ``sig`` under ``key``.

        Raises:
            ValueError: ``key`` is already indexed, or ``sig`` has the wrong length.
        """
        if key in self._order:
            raise ValueError(f"key {key} is already in the index")
        for table, band in zip(self._tables, self._band_keys(sig), strict=True):
            table.setdefault(band, []).append(key)
        self._order[key] = len(self._order)

    def query(self, sig: np.ndarray) -> list[int]:
        """Keys sharing at least one band with ``sig``, in the order they were added.

        Raises:
            ValueError: ``sig`` has the wrong length.
        """
        found: set[int] = set()
        for table, band in zip(self._tables, self._band_keys(sig), strict=True):
            found.update(table.get(band, ()))
        return sorted(found, key=self._order.__getitem__)

    def _band_keys(self, sig: np.ndarray) -> list[bytes]:
        if sig.shape != (self.num_perm,):
            raise ValueError(f"signature must have shape ({self.num_perm},), got {sig.shape}")
        used = np.ascontiguousarray(sig[: self.bands * self.rows], dtype=np.uint32)
        return [band.tobytes() for band in used.reshape(self.bands, self.rows)]


def near_duplicates(
    sigs: np.ndarray,
    cfg: DedupConfig,
    existing: tuple[list[int], np.ndarray] | None = None,
    *,
    keys: Sequence[int] | None = None,
) -> list[int | None]:
    """For each row of ``sigs`` in order, the key of the earlier kept item it duplicates, else None.

    Earlier kept items are ``existing`` (keys, signatures), already deduplicated, then the rows of
    this batch found to be no duplicate; row ``i`` is keyed ``keys[i]`` (default ``i``). A duplicate
    is not indexed itself, so a cluster collapses onto its first member. Among several matches, the
    earliest kept wins. A match needs at least ``threshold`` of the signature slots to agree.

    Raises:
        ValueError: shapes disagree with ``cfg.num_perm`` or with the keys, or keys repeat (an
            existing key equal to a batch key would make answers ambiguous: pass ``keys``).
    """
    batch_keys = list(range(len(sigs))) if keys is None else list(keys)
    _check_batch(sigs, cfg, batch_keys, existing)
    index = LSHIndex(cfg)
    kept: dict[int, np.ndarray] = {}
    if existing is not None:
        for key, sig in zip(existing[0], existing[1], strict=True):
            index.add(key, sig)
            kept[key] = sig
    need = cfg.threshold * cfg.num_perm
    found: list[int | None] = []
    for key, sig in zip(batch_keys, sigs, strict=True):
        match = _first_match(index.query(sig), kept, sig, need)
        found.append(match)
        if match is None:
            index.add(key, sig)
            kept[key] = sig
    return found


def _first_match(
    candidates: list[int], kept: dict[int, np.ndarray], sig: np.ndarray, need: float
) -> int | None:
    """First candidate (oldest) with at least ``need`` equal slots, else None."""
    if not candidates:
        return None
    agree = np.count_nonzero(np.stack([kept[c] for c in candidates]) == sig, axis=1)
    hits = np.flatnonzero(agree >= need)
    return candidates[int(hits[0])] if hits.size else None


def _check_batch(
    sigs: np.ndarray, cfg: DedupConfig, keys: list[int], existing: tuple[list[int], np.ndarray] | None
) -> None:
    if sigs.ndim != 2 or sigs.shape[1] != cfg.num_perm:
        raise ValueError(f"signatures must have shape (n, {cfg.num_perm}), got {sigs.shape}")
    if len(keys) != len(sigs):
        raise ValueError(f"{len(keys)} keys for {len(sigs)} signatures")
    old_keys: list[int] = []
    if existing is not None:
        old_keys, old_sigs = existing
        if old_sigs.ndim != 2 or old_sigs.shape != (len(old_keys), cfg.num_perm):
            raise ValueError(
                f"existing signatures must have shape ({len(old_keys)}, {cfg.num_perm}), got {old_sigs.shape}"
            )
    if len(set(old_keys) | set(keys)) != len(old_keys) + len(keys):
        raise ValueError("keys repeat (between existing and batch, or within one); pass distinct keys=")


def _shingle_hashes(texts: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct 31-bit shingle hashes of normalized ``texts``: (doc index, hash), sorted by doc.

    Both arrays are int64/uint64 of one length: the number of distinct (doc, shingle) pairs.
    """
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    # One UTF-32 buffer for the chunk: code point i of the joined texts is codes[i].
    codes = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    starts = np.cumsum(lengths) - lengths
    windows = np.maximum(lengths - k + 1, 0)  # shingles per text; 0 for texts shorter than k
    docs = np.repeat(np.arange(len(texts), dtype=np.int64), windows)
    # Position of each window in the joined buffer: its text's start plus its rank within the text.
    first = np.cumsum(windows) - windows
    positions = np.arange(docs.size, dtype=np.int64) + np.repeat(starts - first, windows)
    hashes = _window_hashes(codes, k)[positions] if docs.size else np.zeros(0, np.uint64)
    short = [i for i, n in enumerate(lengths) if 0 < n < k]
    if short:
        whole = [_poly_hash(codes[starts[i] : starts[i] + lengths[i]]) for i in short]
        docs = np.concatenate([docs, np.array(short, dtype=np.int64)])
        hashes = np.concatenate([hashes, np.array(whole, dtype=np.uint64)])
    # Repeated shingles (common words) would only redo work: keep each (doc, hash) once. A sort
    # beats np.unique, which hashes instead of sorting in numpy >= 2.3 and is several times slower here.
    pairs = np.sort((docs.astype(np.uint64) << _SHIFT31_64) | _mix31(hashes))
    pairs = pairs[_run_starts(pairs)]
    return (pairs >> _SHIFT31_64).astype(np.int64), pairs & _P64


def _window_hashes(codes: np.ndarray, k: int) -> np.ndarray:
    """Polynomial hash (mod 2**64) of every window of ``k`` code points; length len(codes) - k + 1."""
    n = codes.size - k + 1
    if n <= 0:
        return np.zeros(0, np.uint64)
    out = np.zeros(n, dtype=np.uint64)
    for j in range(k):  # k vectorised passes (Horner's rule), not one Python step per shingle
        out *= _POLY
        out += codes[j : j + n]
    return out


def _poly_hash(codes: np.ndarray) -> int:
    """The polynomial hash of :func:`_window_hashes` for one short sequence."""
    value = 0
    for code in codes.tolist():
        value = (value * int(_POLY) + code) & _MASK64
    return value


def _mix31(values: np.ndarray) -> np.ndarray:
    """Avalanche 64-bit hashes (MurmurHash3 finalizer) and keep their top 31 bits."""
    values = values ^ (values >> np.uint64(33))
    values *= _MIX1
    values ^= values >> np.uint64(33)
    values *= _MIX2
    values ^= values >> np.uint64(33)
    return values >> np.uint64(33)


def _min_hash_into(
    out: np.ndarray, docs: np.ndarray, hashes: np.ndarray, a: np.ndarray, b: np.ndarray
) -> None:
    """out[d, i] = min over doc d's hashes x of (a[i] * x + b[i]) mod p; docs without hashes untouched.

    ``docs`` is sorted. Rows go in fixed blocks that may split a doc; a split doc's partial minima
    are merged into ``out`` with the ones already there.
    """
    for r0 in range(0, docs.size, _BLOCK_ROWS):
        block_docs = docs[r0 : r0 + _BLOCK_ROWS]
        firsts = _run_starts(block_docs)
        values = _permute(hashes[r0 : r0 + _BLOCK_ROWS], a, b)  # (num_perm, rows) uint32
        # Reducing along the contiguous last axis is several times faster than along axis 0.
        mins = np.minimum.reduceat(values, firsts, axis=1).T  # (docs in block, num_perm)
        ids = block_docs[firsts]
        out[ids] = np.minimum(out[ids], mins)


def _permute(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a * x + b) mod p for every permutation (rows) and hash x (columns): uint32 (len(a), len(x))."""
    y = np.multiply.outer(a, x)  # < 2**62: a and x are below 2**31
    y += b[:, None]
    # y mod p for p = 2**31 - 1: fold the high bits onto the low ones (2**31 = 1 mod p), twice.
    high = y >> _SHIFT31_64
    y &= _P64
    y += high  # < 2**32 now, so the second fold runs on half the bytes
    folded = y.astype(np.uint32)
    carry = folded >> _SHIFT31_32
    folded &= _P32
    folded += carry  # in [0, p]; p stands for 0, which only relabels one value
    return folded


def _permutations(cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """The ``num_perm`` (a, b) pairs of ``cfg.seed``: a in [1, p), b in [0, p), uint64."""
    return _permutations_for(cfg.num_perm, cfg.seed)


@lru_cache(maxsize=8)
def _permutations_for(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, _P, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, _P, size=num_perm, dtype=np.uint64)
    return a, b


def _run_starts(values: np.ndarray) -> np.ndarray:
    """Indices where a run of equal values starts in sorted ``values`` (empty for an empty array)."""
    if not values.size:
        return np.zeros(0, dtype=np.intp)
    return np.concatenate([[0], np.flatnonzero(values[1:] != values[:-1]) + 1])


def _simpson(values: np.ndarray, width: float) -> np.ndarray:
    """Simpson's rule along the last axis over an odd number of evenly spaced samples spanning ``width``."""
    step = width / (values.shape[-1] - 1)
    weights = np.ones(values.shape[-1])
    weights[1:-1:2], weights[2:-1:2] = 4, 2
    return (values * weights).sum(axis=-1) * step / 3


def _shards(texts: Sequence[str], count: int) -> Iterator[list[str]]:
    size = -(-len(texts) // count)
    for start in range(0, len(texts), size):
        yield list(texts[start : start + size])


def _available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
