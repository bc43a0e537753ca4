"""Settings of the memory: which embedder, how recall weighs its parts, how much of a prompt it fills."""

from __future__ import annotations

from dataclasses import dataclass

from finetuneflow.config import setting

# Default importance by kind (the middle of each band: corrections 0.9-1.0, facts 0.7-0.8,
# documents 0.5-0.6, interactions 0.3-0.4).
KINDS = ("document", "fact", "interaction", "correction")
DEFAULT_IMPORTANCE = {"correction": 0.95, "fact": 0.75, "document": 0.55, "interaction": 0.35}


@dataclass
class MemoryConfig:
    """How a project's memory embeds, recalls and ranks. (How much of a chat prompt memories may
    fill, and how many, are the chat's settings: ``memory_share`` and ``memories``.)"""

    embedder: str = setting(
        "",
        "Embedder: all-MiniLM-L6-v2 (offline), openai:<model> (an OpenAI-compatible /v1/embeddings), "
        "hash:<dim> (tests). '' = the one the project's memory was built with, else all-MiniLM-L6-v2.",
    )
    k: int = setting(5, "Items a recall returns.")
    similarity_weight: float = setting(0.7, "Weight of similarity to the query in an item's score.")
    importance_weight: float = setting(0.2, "Weight of the item's importance (0-1) in its score.")
    recency_weight: float = setting(0.1, "Weight of recency (1 = just now, halving every half-life).")
    half_life_days: float = setting(30.0, "Days after which an item's recency part has halved.")
    hybrid: bool = setting(True, "Blend BM25 word matching into similarity (measured: bench/memory.py).")
    bm25_share: float = setting(0.3, "BM25's share of the hybrid similarity; the vector cosine has the rest.")
    superseded_factor: float = setting(0.5, "Score multiplier of an item a correction has replaced.")
    match_threshold: float = setting(
        0.3, "Least vector cosine for `correct QUERY` to pick its best match; below it nothing matches."
    )
    candidates: int = setting(50, "Items each retriever (vector, BM25) proposes before ranking.")

    def problems(self) -> list[str]:
        out = []
        for name in (
            "similarity_weight",
            "importance_weight",
            "recency_weight",
            "bm25_share",
            "superseded_factor",
            "match_threshold",
        ):
            if not 0 <= getattr(self, name) <= 1:
                out.append(f"{name}: must be in [0, 1]")
        if self.k < 1:
            out.append("k: must be >= 1")
        if self.candidates < 1:
            out.append("candidates: must be >= 1")
        if self.half_life_days <= 0:
            out.append("half_life_days: must be > 0")
        return out
