"""The parts of a recall score, one at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from finetuneflow.errors import ConfigError
from finetuneflow.memory.bm25 import BM25
from finetuneflow.memory.config import MemoryConfig
from finetuneflow.memory.rank import recency, score

NOW = datetime(2026, 12, 3, tzinfo=UTC)


def test_recency_halves_every_half_life() -> None:
    assert recency(NOW, NOW, 30) == 1.0
    assert recency(NOW - timedelta(days=30), NOW, 30) == pytest.approx(0.5)
    assert recency(NOW - timedelta(days=60), NOW, 30) == pytest.approx(0.25)
    assert recency(NOW + timedelta(days=1), NOW, 30) == 1.0  # a clock skew is not "newer than new"


def test_score_is_the_weighted_sum_of_its_parts() -> None:
    cfg = MemoryConfig(similarity_weight=0.6, importance_weight=0.3, recency_weight=0.1, bm25_share=0.25)
    parts = score(cfg, vector=0.8, bm25=0.4, importance=0.5, recent=0.5)
    assert parts.similarity == pytest.approx(0.75 * 0.8 + 0.25 * 0.4)
    assert parts.score == pytest.approx(0.6 * parts.similarity + 0.3 * 0.5 + 0.1 * 0.5)
    vector_only = score(MemoryConfig(hybrid=False), vector=0.8, bm25=0.4, importance=0.5, recent=0.5)
    assert (vector_only.similarity, vector_only.bm25) == (0.8, 0.0)
    assert score(cfg, vector=-0.3, bm25=0, importance=0, recent=0).vector == 0.0  # opposite is not negative


def test_a_replaced_item_is_demoted() -> None:
    cfg = MemoryConfig(superseded_factor=0.5)
    kept = score(cfg, 0.9, 1.0, 0.75, 1.0)
    replaced = score(cfg, 0.9, 1.0, 0.75, 1.0, superseded=True)
    assert replaced.score == pytest.approx(kept.score / 2) and replaced.superseded


def test_importance_and_recency_break_a_tie_in_similarity() -> None:
    cfg = MemoryConfig()
    assert score(cfg, 0.5, 0, 0.95, 1.0).score > score(cfg, 0.5, 0, 0.55, 1.0).score
    assert score(cfg, 0.5, 0, 0.75, 1.0).score > score(cfg, 0.5, 0, 0.75, 0.1).score


def test_bad_settings_are_all_reported() -> None:
    problems = MemoryConfig(k=0, bm25_share=2, half_life_days=0).problems()
    assert problems == ["bm25_share: must be in [0, 1]", "k: must be >= 1", "half_life_days: must be > 0"]
    from finetuneflow.memory.store import Memory

    with pytest.raises(ConfigError, match="k: must be"):
        Memory("p", MemoryConfig(k=0, embedder="hash:8"))


def test_bm25_prefers_the_rare_word_and_forgets_removed_documents() -> None:
    index = BM25()
    index.add(1, "the tank is empty")
    index.add(2, "the lid is open")
    index.add(3, "error E21 the tank")
    scores = index.scores("E21 tank")
    assert max(scores, key=scores.__getitem__) == 3
    assert 2 not in scores  # shares no word
    index.remove(3)
    assert set(index.scores("E21 tank")) == {1} and len(index) == 2
    index.add(1, "replaced text")  # re-adding an id replaces it
    assert index.scores("tank") == {}
    assert list(index.top("the", 1)) == [2]
