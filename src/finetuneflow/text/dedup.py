"""Exact and near-duplicate detection for texts: MinHash signatures and banded LSH, in numpy.

Exact duplicates share :func:`exact_key` (sha1 of the normalized text). Near duplicates are found
in three steps, each usable alone:

1. :func:`signatures` (or :func:`parallel_signatures`) turns each text into ``num_perm`` MinHash
   slots over character ``shingle``-grams of its normalized form;
2. :class:`LSHIndex` buckets signatures by bands so that only likely pairs are compared;
3. :func:`near_duplicates` walks a batch in order and points each duplicate at the first kept item
   it resembles, whose estimated Jaccard similarity reaches ``threshold``.

Signature scheme (:data:`SCHEME`; all vectorised, no Python loop per shingle): the normalized
text is viewed as an array of code points (UTF-32), every window of ``shingle`` code points gets a
64-bit polynomial hash, salted by the seed and avalanched (MurmurHash3 finalizer). That one hash
is the permutation: its top 32 bits pick one of ``num_perm`` slots, its low 31 bits are the value,
and a slot keeps the smallest value that falls into it ("one-permutation hashing", Li, Owen and
Zhang 2012). A slot that no shingle reached borrows the value of another slot, picked by a seeded
hash of (slot, attempt) until a filled one comes up ("optimal densification", Shrivastava 2017).
Two texts then agree in any one slot with probability equal to their Jaccard similarity, as with
``num_perm`` independent permutations, at O(shingles) instead of O(shingles x num_perm) work:
about 5x fewer CPU seconds than the 128 universal hashes used before. Signatures of different
schemes, shingle sizes, seeds or lengths are not comparable: :func:`signature_tag` names the
combination, and stored signatures carry it (see ``store.py``).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import unicodedata
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from finetuneflow.config import setting

SCHEME = "oph-densified-v1"
"""Name of the signature scheme; part of :func:`signature_tag`. Change it whenever signatures change."""
EMPTY_SLOT = np.uint32(0xFFFFFFFF)  # above every slot value (< 2**31), so empty texts match no text
_VALUE_MASK = np.uint64(0x7FFFFFFF)  # low 31 bits of a shingle's hash: its value in its slot
_U32 = np.uint64(32)
_U33 = np.uint64(33)
_POLY = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the polynomial shingle hash
_MIX1 = np.uint64(0xFF51AFD7ED558CCD)  # MurmurHash3 finalizer constants: spread the polynomial's
_MIX2 = np.uint64(0xC4CEB9FE1A85EC53)  # weak low bits over all 64
_ATTEMPT = 0xD6E8FEB86659FD93  # odd multiplier separating densification attempts
_MASK64 = (1 << 64) - 1
# Densification draws at most this many donor slots per empty slot, per slot of the signature,
# before taking the next filled slot instead; only texts of a few shingles get that far.
_MAX_ATTEMPTS_PER_SLOT = 2
# Texts normalized and shingled together: bounds the code-point and window arrays (~50 MB at 2 KB/text).
_CHUNK_TEXTS = 1000
# Below this many texts, starting worker processes costs more than it saves.
POOL_MIN_TEXTS = 2000
_BLOCK = 4096  # signatures per block of an LSHIndex (2 MB at 128 slots)
# Band hashes an LSHIndex keeps in a dict (~150 bytes each) before merging them into its sorted arrays.
_RECENT_BANDS = 1 << 16
_PUNCTUATION = re.compile(r"[^\w\s]+")


@dataclass
class DedupConfig:
    """Settings of near-duplicate detection."""

    num_perm: int = setting(128, "MinHash slots per signature; more is more precise (and more to compare).")
    shingle: int = setting(5, "Length of the character n-grams compared (after normalization).")
    threshold: float = setting(0.8, "Estimated Jaccard similarity from which two texts are duplicates.")
    seed: int = setting(1, "Seed of the shingle hash; signatures are only comparable under one seed.")

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
    return _sha1_hex(normalize(text))


def _sha1_hex(normalized: str) -> str:
    return hashlib.sha1(normalized.encode("utf-8", "surrogatepass")).hexdigest()


def signatures(texts: Sequence[str], cfg: DedupConfig) -> np.ndarray:
    """MinHash signatures of ``texts``: uint32 array of shape (len(texts), cfg.num_perm).

    A row depends only on its text and ``cfg`` (never on the batch). Texts shorter than
    ``cfg.shingle`` (after normalization) count as one shingle; an empty text gets
    :data:`EMPTY_SLOT` in every slot.
    """
    return _signatures((normalize(t) for t in texts), len(texts), cfg)


def dedup_keys(texts: Sequence[str], cfg: DedupConfig) -> tuple[list[str], np.ndarray]:
    """``[exact_key(t) for t in texts]`` and ``signatures(texts, cfg)``, normalizing each text once."""
    normalized = [normalize(t) for t in texts]
    return [_sha1_hex(n) for n in normalized], _signatures(normalized, len(normalized), cfg)


def _signatures(normalized: Iterable[str], count: int, cfg: DedupConfig) -> np.ndarray:
    """:func:`signatures` of ``count`` already normalized texts."""
    out = np.full((count, cfg.num_perm), EMPTY_SLOT, dtype=np.uint32)
    salt = _salt(cfg.seed)
    texts = iter(normalized)
    for start in range(0, count, _CHUNK_TEXTS):
        chunk = list(itertools.islice(texts, _CHUNK_TEXTS))
        docs, hashes = _shingle_hashes(chunk, cfg.shingle)
        _slot_minima_into(out[start : start + len(chunk)], docs, _mix64(hashes ^ salt))
    _densify(out, salt)
    return out


def signature_tag(cfg: DedupConfig) -> int:
    """A 32-bit name of the signature scheme, shingle size, seed and length of ``cfg``.

    Equal tags mean comparable signatures. The top bit is set and the lowest clear, so a tag is
    neither a slot value (< 2**31) nor :data:`EMPTY_SLOT`.
    """
    name = f"{SCHEME} shingle={cfg.shingle} seed={cfg.seed} slots={cfg.num_perm}"
    return 0x80000000 | (zlib.crc32(name.encode()) & 0x7FFFFFFE)


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
    """Signatures bucketed by bands: two signatures are candidates when one band is equal throughout.

    Compact (~0.7 KB per signature at 128 slots, was ~3 KB in Python dicts of byte strings): the
    signatures live in uint32 blocks of :data:`_BLOCK` rows (never copied as they grow), and each
    band is a 64-bit hash, salted by the band's number, kept in one sorted array (with the
    signature's rank beside it) plus a small dict of the latest ones, merged into the sorted array
    when it fills. Keys are looked up through a dict only once they stop being 0, 1, 2, ... A hash
    only finds candidates: a candidate counts when one of its bands is equal slot by slot, so
    answers are exactly those of comparing the bands themselves.
    """

    def __init__(self, cfg: DedupConfig) -> None:
        self.num_perm = cfg.num_perm
        self.bands, self.rows = band_params(cfg.threshold, cfg.num_perm)
        self._sigs: list[np.ndarray] = []  # blocks of _BLOCK signatures, in insertion order
        self._keys: list[np.ndarray] = []  # and their keys
        self._count = 0
        self._rank: dict[int, int] | None = None  # key -> insertion rank; None while key == rank
        self._hashes = np.empty(0, dtype=np.uint64)  # sorted band hashes ...
        self._owners = np.empty(0, dtype=np.int32)  # ... and the rank of the signature of each
        self._recent: dict[int, list[int]] = {}  # band hash -> ranks, not yet in the sorted arrays
        self._recent_count = 0
        rng = np.random.default_rng(0x5EED)
        self._coef = rng.integers(1, 2**63, size=self.rows, dtype=np.uint64) | np.uint64(1)
        self._salts = rng.integers(0, 2**63, size=self.bands, dtype=np.uint64)

    def __len__(self) -> int:
        return self._count

    def add(self, key: int, sig: np.ndarray) -> None:
        """Index signature ``sig`` under ``key``.

        Raises:
            ValueError: ``key`` is already indexed, or ``sig`` has the wrong length.
        """
        if self._rank_of(key) is not None:
            raise ValueError(f"key {key} is already in the index")
        hashes = self._band_hashes(sig)
        rank = self._count
        block, row = divmod(rank, _BLOCK)
        if block == len(self._sigs):
            self._sigs.append(np.empty((_BLOCK, self.num_perm), dtype=np.uint32))
            self._keys.append(np.empty(_BLOCK, dtype=np.int64))
        self._sigs[block][row], self._keys[block][row] = sig, key
        if self._rank is None and key != rank:  # keys other than 0, 1, 2, ...: a dict from now on
            self._rank = {int(k): r for r, k in enumerate(self._all_keys())}
        if self._rank is not None:
            self._rank[key] = rank
        self._count += 1
        for band in hashes.tolist():
            self._recent.setdefault(band, []).append(rank)
        self._recent_count += len(hashes)
        if self._recent_count >= _RECENT_BANDS:
            self._merge()

    def query(self, sig: np.ndarray) -> list[int]:
        """Keys sharing at least one band with ``sig``, in the order they were added.

        Raises:
            ValueError: ``sig`` has the wrong length.
        """
        hashes = self._band_hashes(sig)
        parts = [np.array(self._recent[h], dtype=np.int32) for h in hashes.tolist() if h in self._recent]
        if self._hashes.size:
            lo = np.searchsorted(self._hashes, hashes, "left")
            hi = np.searchsorted(self._hashes, hashes, "right")
            parts += [self._owners[a:b] for a, b in zip(lo.tolist(), hi.tolist(), strict=True) if b > a]
        if not parts:
            return []
        ranks = np.unique(np.concatenate(parts)).tolist()  # sorted: oldest first
        width = self.bands * self.rows
        mine = sig[:width].reshape(self.bands, self.rows)
        theirs = np.stack([self._sigs[r // _BLOCK][r % _BLOCK, :width] for r in ranks])
        equal = (theirs.reshape(len(ranks), self.bands, self.rows) == mine).all(axis=2).any(axis=1)
        return [int(self._keys[r // _BLOCK][r % _BLOCK]) for r, yes in zip(ranks, equal, strict=True) if yes]

    def signature(self, key: int) -> np.ndarray:
        """The signature indexed under ``key`` (a read-only view).

        Raises:
            KeyError: ``key`` is not in the index.
        """
        rank = self._rank_of(key)
        if rank is None:
            raise KeyError(key)
        view = self._sigs[rank // _BLOCK][rank % _BLOCK]
        view.flags.writeable = False
        return view

    def _rank_of(self, key: int) -> int | None:
        if self._rank is not None:
            return self._rank.get(key)
        return key if 0 <= key < self._count else None

    def _all_keys(self) -> np.ndarray:
        return np.concatenate(self._keys)[: self._count] if self._keys else np.empty(0, np.int64)

    def _band_hashes(self, sig: np.ndarray) -> np.ndarray:
        if sig.shape != (self.num_perm,):
            raise ValueError(f"signature must have shape ({self.num_perm},), got {sig.shape}")
        bands = sig[: self.bands * self.rows].astype(np.uint64).reshape(self.bands, self.rows)
        return _mix64((bands * self._coef).sum(axis=1, dtype=np.uint64) ^ self._salts)

    def _merge(self) -> None:
        """Move the recent band hashes into the sorted arrays (one linear insert)."""
        hashes = np.fromiter(
            (h for h, ranks in self._recent.items() for _ in ranks), np.uint64, self._recent_count
        )
        owners = np.fromiter(
            (r for ranks in self._recent.values() for r in ranks), np.int32, self._recent_count
        )
        order = np.argsort(hashes, kind="stable")
        hashes, owners = hashes[order], owners[order]
        at = np.searchsorted(self._hashes, hashes)
        self._hashes = np.insert(self._hashes, at, hashes)
        self._owners = np.insert(self._owners, at, owners)
        self._recent, self._recent_count = {}, 0


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
    """Polynomial hashes of every ``k``-gram of normalized ``texts``: (doc index int64, hash uint64).

    Repeated shingles are kept: a slot's minimum does not change when a value comes twice, and
    sorting them away cost more than it saved.
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
    return docs, hashes


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


def _mix64(values: np.ndarray) -> np.ndarray:
    """Avalanche 64-bit hashes (MurmurHash3 finalizer): every output bit depends on every input bit."""
    values = values ^ (values >> _U33)
    values *= _MIX1
    values ^= values >> _U33
    values *= _MIX2
    values ^= values >> _U33
    return values


def _salt(seed: int) -> np.uint64:
    """The seed's 64-bit salt, xor-ed into shingle hashes before mixing."""
    return np.uint64(int(_mix64(np.array([seed & _MASK64], dtype=np.uint64))[0]))


def _slot_minima_into(out: np.ndarray, docs: np.ndarray, hashes: np.ndarray) -> None:
    """out[d, slot(x)] = min of value(x) over doc d's mixed hashes x; slots no hash reaches untouched.

    slot(x) is the top 32 bits of x scaled to [0, num_perm) (a multiply and a shift, no division);
    value(x) its low 31 bits. ``out`` is a C-contiguous block of rows, updated through a flat view.
    """
    slots = out.shape[1]
    slot = ((hashes >> _U32) * np.uint64(slots)) >> _U32  # < 2**32 * slots: fits while slots < 2**32
    assert out.flags.c_contiguous  # so reshape gives a view: the minima land in ``out`` itself
    flat = out.reshape(-1)  # 7x faster than np.minimum.at with a (row, slot) index pair
    np.minimum.at(flat, docs * slots + slot.astype(np.int64), (hashes & _VALUE_MASK).astype(np.uint32))


def _densify(sigs: np.ndarray, salt: np.uint64) -> None:
    """Fill the empty slots of rows that have some filled ones (optimal densification), in place.

    Empty slot ``i`` tries donor ``d(i, t)`` for attempts t = 1, 2, ... (a seeded hash, the same
    for every text) and copies the first donor filled by the text's own shingles. Two texts with
    the same filled slots borrow alike, which keeps P(slot agrees) = Jaccard. After
    ``_MAX_ATTEMPTS_PER_SLOT * num_perm`` misses (texts of very few shingles) the next filled slot
    to the right is taken instead, also the same for every text, so the loop always ends.
    """
    empty = sigs == EMPTY_SLOT
    partly = np.flatnonzero(empty.any(axis=1) & ~empty.all(axis=1))
    if not partly.size:
        return
    own = sigs[partly]  # (rows, slots): donors are read from the filled slots only, never refills
    rows, cols = np.nonzero(empty[partly])
    slots = sigs.shape[1]
    base = _mix64(cols.astype(np.uint64) ^ salt)
    for attempt in range(1, _MAX_ATTEMPTS_PER_SLOT * slots + 1):
        mixed = _mix64(base + np.uint64(attempt * _ATTEMPT & _MASK64))  # Python ints: no overflow warning
        donors = (((mixed >> _U32) * np.uint64(slots)) >> _U32).astype(np.int64)
        got = own[rows, donors]
        hit = got != EMPTY_SLOT
        sigs[partly[rows[hit]], cols[hit]] = got[hit]
        rows, cols, base = rows[~hit], cols[~hit], base[~hit]
        if not rows.size:
            return
    for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
        filled = np.flatnonzero(np.roll(own[row], -col - 1) != EMPTY_SLOT)  # the slots right of col
        sigs[partly[row], col] = own[row, (col + 1 + filled[0]) % slots]


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
