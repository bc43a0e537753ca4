"""Deduplication: normalization, MinHash accuracy against true Jaccard, LSH search, config checks."""

from __future__ import annotations

import random
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pytest

from finetuneflow.config import from_dict
from finetuneflow.errors import ConfigError
from finetuneflow.text import dedup as dedup
from finetuneflow.text.dedup import (
    EMPTY_SLOT,
    DedupConfig,
    LSHIndex,
    band_params,
    exact_key,
    near_duplicates,
    normalize,
    parallel_signatures,
    signatures,
)

CFG = DedupConfig()
VOCAB = ["".join(random.Random(i).choices("abcdefghijklmnopqrstuvwxyz", k=3 + i % 8)) for i in range(3000)]


def words(rng: random.Random, n: int) -> list[str]:
    return rng.choices(VOCAB, k=n)


def edit(text: str, rng: random.Random, changes: int) -> str:
    """``text`` with ``changes`` words replaced by random vocabulary words."""
    tokens = text.split()
    for i in rng.sample(range(len(tokens)), changes):
        tokens[i] = rng.choice(VOCAB)
    return " ".join(tokens)


def true_jaccard(a: str, b: str, k: int = 5) -> float:
    """Exact Jaccard of the k-gram sets of the normalized texts (the quantity MinHash estimates)."""
    sa, sb = ({t[i : i + k] for i in range(len(t) - k + 1)} for t in (normalize(a), normalize(b)))
    return len(sa & sb) / len(sa | sb)


def estimated(sigs: np.ndarray) -> float:
    return float(np.mean(sigs[0] == sigs[1]))


# --- normalization and exact keys ---------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b",
    [
        ("Hello,  World!", "hello world"),
        ("  Tabs\tand\nnewlines  ", "tabs and newlines"),
        ("ＦＵＬＬ width", "full width"),  # NFKC folds full-width letters
        ("end.Start -- again", "END. start again"),
        ("Straße", "STRASSE"),  # casefold, not lower()
    ],
)
def test_same_exact_key_after_normalization(a: str, b: str) -> None:
    assert normalize(a) == normalize(b)
    assert exact_key(a) == exact_key(b)


@pytest.mark.parametrize("a, b", [("hello world", "hello word"), ("don't", "dont"), ("a b", "ab"), ("", "x")])
def test_different_texts_have_different_exact_keys(a: str, b: str) -> None:
    assert exact_key(a) != exact_key(b)


def test_exact_key_is_sha1_hex() -> None:
    key = exact_key("Some text")
    assert len(key) == 40 and int(key, 16) >= 0


# --- signatures ---------------------------------------------------------------------------------


def test_signature_shape_dtype_and_determinism() -> None:
    texts = ["one short text", "another text entirely", "x" * 500]
    sigs = signatures(texts, CFG)
    assert sigs.shape == (3, CFG.num_perm) and sigs.dtype == np.uint32
    assert np.array_equal(sigs, signatures(texts, CFG))
    assert np.array_equal(sigs[1:2], signatures(texts[1:2], CFG))  # a row never depends on its batch
    assert not np.array_equal(sigs, signatures(texts, DedupConfig(seed=2)))


def test_dedup_keys_equal_exact_keys_and_signatures() -> None:
    texts = ["One text.", "", "another, TEXT", "x" * 3000]
    keys, sigs = dedup.dedup_keys(texts, CFG)
    assert keys == [exact_key(t) for t in texts]
    assert np.array_equal(sigs, signatures(texts, CFG))


def test_empty_and_short_texts() -> None:
    sigs = signatures(["", " ,. ", "ab", "AB!", "ac"], CFG)
    assert (sigs[0] == EMPTY_SLOT).all() and (sigs[1] == EMPTY_SLOT).all()  # punctuation only = empty
    assert (sigs[2] != EMPTY_SLOT).all()  # shorter than the shingle: the whole text is one shingle
    assert np.array_equal(sigs[2], sigs[3])
    assert estimated(sigs[[2, 4]]) < 0.1


def test_non_ascii_texts_shingle_by_character() -> None:
    a = "Überraschung für die Straßenbahn – 東京の電車は速い"
    sigs = signatures([a, a.upper(), a + " 追加"], CFG)
    assert np.array_equal(sigs[0], sigs[1])
    assert 0.5 < estimated(sigs[[0, 2]]) < 1.0


def test_estimated_jaccard_tracks_true_jaccard() -> None:
    rng = random.Random(7)
    wide = DedupConfig(num_perm=512)  # std of the estimate <= 0.022, so +-0.1 is a 4.5-sigma bound
    errors_wide, errors_default = [], []
    for i in range(20):
        base = " ".join(words(rng, 120))
        other = edit(base, rng, changes=i * 3)  # 0..57 of 120 words changed: J from 1 down to ~0.1
        truth = true_jaccard(base, other)
        errors_wide.append(abs(estimated(signatures([base, other], wide)) - truth))
        errors_default.append(abs(estimated(signatures([base, other], CFG)) - truth))
    assert max(errors_wide) <= 0.1, errors_wide
    assert np.mean(errors_default) <= 0.04, errors_default  # no bias at the default size either


def test_estimate_is_unbiased_over_many_pairs() -> None:
    """One-permutation hashing with densification: mean error ~0, spread no worse than 128 MinHashes."""
    rng = random.Random(11)
    errors, truths = [], []
    for _ in range(150):
        base = " ".join(words(rng, 60))
        other = edit(base, rng, changes=3)
        truths.append(true_jaccard(base, other))
        errors.append(estimated(signatures([base, other], CFG)) - truths[-1])
    j = float(np.mean(truths))
    minhash_std = np.sqrt(j * (1 - j) / CFG.num_perm)
    assert abs(np.mean(errors)) < 3 * minhash_std / np.sqrt(len(errors))  # a 3-sigma bound on bias
    assert np.std(errors) < 1.2 * minhash_std


def test_every_slot_of_a_non_empty_text_is_filled() -> None:
    texts = ["hello", "a few more words here", " ".join(VOCAB[:400])]
    sigs = signatures(texts, CFG)
    assert (sigs != EMPTY_SLOT).all() and (sigs < 2**31).all()
    assert len(set(sigs[0].tolist())) == 1  # one shingle: every slot borrows its only value


def test_densification_fallback_fills_deterministically(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = ["tiny text", "tiny text!", "other tiny"]
    drawn = signatures(texts, CFG)
    monkeypatch.setattr(dedup, "_MAX_ATTEMPTS_PER_SLOT", 0)  # straight to "next filled slot"
    scanned = signatures(texts, CFG)
    assert (scanned != EMPTY_SLOT).all()
    assert np.array_equal(scanned[0], scanned[1]) and np.array_equal(drawn[0], drawn[1])
    assert np.array_equal(scanned, signatures(texts, CFG))


def test_signature_tag_names_the_settings() -> None:
    tags = {
        dedup.signature_tag(c)
        for c in (CFG, DedupConfig(seed=2), DedupConfig(shingle=4), DedupConfig(num_perm=64))
    }
    assert len(tags) == 4
    assert all(t >= 2**31 and t != EMPTY_SLOT for t in tags)  # never a slot value
    assert dedup.signature_tag(DedupConfig()) == dedup.signature_tag(CFG)


# --- LSH and near duplicates --------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7, 0.8, 0.9, 0.95])
@pytest.mark.parametrize("num_perm", [16, 64, 128, 256])
def test_band_params_fit_in_the_signature(threshold: float, num_perm: int) -> None:
    bands, rows = band_params(threshold, num_perm)
    assert bands >= 1 and rows >= 1 and bands * rows <= num_perm
    # The S-curve 1 - (1 - s^r)^b must rise near the threshold, not far from it.
    midpoint = (1 / bands) ** (1 / rows)
    assert abs(midpoint - threshold) < 0.2


def test_band_params_default_matches_datasketch_choice() -> None:
    assert band_params(0.8, 128) == (9, 13)
    lsh = pytest.importorskip("datasketch.lsh")
    for threshold, num_perm in [(0.5, 128), (0.9, 256), (0.7, 64)]:
        ours, theirs = band_params(threshold, num_perm), lsh._optimal_param(threshold, num_perm, 0.5, 0.5)
        assert abs(ours[0] - theirs[0]) <= 1 and abs(ours[1] - theirs[1]) <= 1


def test_lsh_index_query_order_and_errors() -> None:
    sigs = signatures(["the same text here", "the same text here", "something else"], CFG)
    index = LSHIndex(CFG)
    index.add(7, sigs[0])
    index.add(3, sigs[2])
    index.add(5, sigs[1])
    assert index.query(sigs[1]) == [7, 5]  # insertion order, not key order
    assert index.query(sigs[2]) == [3]
    assert len(index) == 3
    with pytest.raises(ValueError, match="already"):
        index.add(7, sigs[0])
    with pytest.raises(ValueError, match="shape"):
        index.query(sigs[0][:10])


def test_near_duplicates_finds_light_edit_and_ignores_unrelated() -> None:
    rng = random.Random(1)
    base = " ".join(words(rng, 300))
    texts = [base] + [" ".join(words(rng, 300)) for _ in range(5)] + [edit(base, rng, changes=4)]
    assert true_jaccard(base, texts[-1]) > 0.9
    assert near_duplicates(signatures(texts, CFG), CFG) == [None] * 6 + [0]


def test_near_duplicates_treats_formatting_changes_as_duplicates() -> None:
    rng = random.Random(2)
    base = " ".join(words(rng, 200))
    texts = [base, base.upper().replace(" ", "  ,\n"), " ".join(words(rng, 200))]
    assert near_duplicates(signatures(texts, CFG), CFG) == [None, 0, None]


def test_clusters_collapse_to_first_member() -> None:
    rng = random.Random(3)
    base = " ".join(words(rng, 300))
    other = " ".join(words(rng, 300))
    texts = [base, edit(base, rng, 3), other, edit(base, rng, 3), edit(other, rng, 2), base]
    assert near_duplicates(signatures(texts, CFG), CFG) == [None, 0, None, 0, 2, 0]


def test_existing_items_come_first() -> None:
    rng = random.Random(4)
    old = [" ".join(words(rng, 250)) for _ in range(3)]
    new = [" ".join(words(rng, 250)), edit(old[1], rng, 3), edit(old[1], rng, 3)]
    existing = ([100, 101, 102], signatures(old, CFG))
    assert near_duplicates(signatures(new, CFG), CFG, existing) == [None, 101, 101]
    found = near_duplicates(signatures(new + [new[0]], CFG), CFG, existing, keys=[200, 201, 202, 203])
    assert found == [None, 101, 101, 200]


def test_near_duplicates_rejects_bad_input() -> None:
    sigs = signatures(["a text", "another"], CFG)
    with pytest.raises(ValueError, match="keys repeat"):
        near_duplicates(sigs, CFG, ([0], sigs[:1]))  # old key 0 would be ambiguous with row 0
    with pytest.raises(ValueError, match="shape"):
        near_duplicates(sigs[:, :64], CFG)
    with pytest.raises(ValueError, match="keys for"):
        near_duplicates(sigs, CFG, keys=[1])


# --- parallel signatures ------------------------------------------------------------------------


def test_parallel_signatures_equal_serial(monkeypatch: pytest.MonkeyPatch) -> None:
    pools: list[Any] = []

    class SpyPool(ProcessPoolExecutor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pools.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(dedup, "ProcessPoolExecutor", SpyPool)
    monkeypatch.setattr(dedup, "POOL_MIN_TEXTS", 50)  # reach the pool without thousands of texts
    rng = random.Random(5)
    texts = [" ".join(words(rng, rng.randint(0, 40))) for _ in range(301)]
    assert np.array_equal(parallel_signatures(texts, CFG, workers=2), signatures(texts, CFG))
    assert pools == [{"max_workers": 2}]
    assert np.array_equal(parallel_signatures(texts[:10], CFG, workers=2), signatures(texts[:10], CFG))
    assert len(pools) == 1  # small inputs stay in process
    with pytest.raises(ValueError, match="workers"):
        parallel_signatures(texts, CFG, workers=-1)


# --- configuration ------------------------------------------------------------------------------


def test_config_defaults_are_valid() -> None:
    assert from_dict(DedupConfig, {}) == DedupConfig()
    assert DedupConfig().problems() == []


def test_bad_config_values_are_all_reported() -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(DedupConfig, {"num_perm": 8, "shingle": 0, "threshold": 1.0})
    assert [e.split(":")[0] for e in info.value.errors] == ["num_perm", "shingle", "threshold"]


@pytest.mark.parametrize(
    "data", [{"shingle": 33}, {"threshold": 0}, {"threshold": -0.5}, {"num_perm": "many"}, {"thresh": 0.5}]
)
def test_each_bad_value_is_refused(data: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        from_dict(DedupConfig, data)


def _band_reference(sigs: np.ndarray, bands: int, rows: int) -> list[list[int]]:
    """Per row, the earlier rows sharing one band slot by slot (the dict-of-bytes index used before)."""
    tables: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
    out = []
    for i, sig in enumerate(sigs):
        keys = [sig[b * rows : (b + 1) * rows].tobytes() for b in range(bands)]
        out.append(sorted({k for t, key in zip(tables, keys, strict=True) for k in t.get(key, [])}))
        for t, key in zip(tables, keys, strict=True):
            t.setdefault(key, []).append(i)
    return out


@pytest.mark.parametrize("recent", [1 << 16, 40])  # 40: merged into the sorted arrays every few adds
def test_compact_lsh_answers_like_comparing_bands(monkeypatch: pytest.MonkeyPatch, recent: int) -> None:
    monkeypatch.setattr(dedup, "_RECENT_BANDS", recent)
    monkeypatch.setattr(dedup, "_BLOCK", 64)  # signatures over several blocks
    rng = random.Random(5)
    bases = [" ".join(words(rng, 120)) for _ in range(40)]
    texts = [edit(rng.choice(bases), rng, changes=rng.choice([0, 2, 8, 30, 90])) for _ in range(300)]
    sigs = signatures(texts, CFG)
    index = LSHIndex(CFG)
    expected = _band_reference(sigs, index.bands, index.rows)
    for i, sig in enumerate(sigs):
        assert index.query(sig) == expected[i]
        index.add(i, sig)
        assert np.array_equal(index.signature(i), sig)
    assert sum(map(bool, expected)) > 100  # plenty of candidates were found, not only empty answers
    # near_duplicates keeps the same items as a brute-force walk with the reference candidates
    need = CFG.threshold * CFG.num_perm
    kept: list[int] = []
    brute: list[int | None] = []
    for i, sig in enumerate(sigs):
        shared = set(_band_reference(sigs[[*kept, i]], index.bands, index.rows)[-1])
        agreeing = (kept[j] for j in sorted(shared) if np.count_nonzero(sigs[kept[j]] == sig) >= need)
        match = next(agreeing, None)
        brute.append(match)
        if match is None:
            kept.append(i)
    assert near_duplicates(sigs, CFG) == brute
    assert 0 < brute.count(None) < len(texts)
