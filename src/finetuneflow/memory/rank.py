"""How recall scores an item: similarity to the query (vector cosine, blended with BM25 when hybrid),
importance and recency, each weighted, and a replaced item demoted. Pure functions of plain numbers,
so a test can check each part."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from finetuneflow.memory.config import MemoryConfig

DAY = 86400.0


@dataclass(frozen=True)
class ScoreParts:
    """The parts of one item's score (all in [0, 1] but ``score``, which is their weighted sum)."""

    vector: float  # cosine similarity, clipped at 0
    bm25: float  # BM25 / the best BM25 among the candidates
    similarity: float  # vector, or (1 - bm25_share) * vector + bm25_share * bm25 when hybrid
    importance: float
    recency: float  # 0.5 ** (age / half-life)
    superseded: bool
    score: float

    def as_dict(self) -> dict[str, float | bool]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def recency(updated: datetime, now: datetime, half_life_days: float) -> float:
    """1 for an item updated now, halving every ``half_life_days``."""
    age_days = max((now - updated).total_seconds(), 0.0) / DAY
    return float(0.5 ** (age_days / half_life_days))


def score(
    cfg: MemoryConfig,
    vector: float,
    bm25: float,
    importance: float,
    recent: float,
    superseded: bool = False,
) -> ScoreParts:
    """The weighted score of one candidate (``bm25`` already normalised to [0, 1])."""
    vector = max(vector, 0.0)
    similarity = (1 - cfg.bm25_share) * vector + cfg.bm25_share * bm25 if cfg.hybrid else vector
    total = (
        cfg.similarity_weight * similarity + cfg.importance_weight * importance + cfg.recency_weight * recent
    )
    if superseded:
        total *= cfg.superseded_factor
    return ScoreParts(vector, bm25 if cfg.hybrid else 0.0, similarity, importance, recent, superseded, total)
