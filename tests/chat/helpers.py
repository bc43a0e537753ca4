"""A fake memory for chat tests: the :class:`MemoryPort` seam, in a list."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PROJECT = "p"
RUN = "tiny-run"


@dataclass
class FakeMemory:
    """A :class:`MemoryPort` in a list: recall returns every item whose words meet the query's."""

    items: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    correct_finds: bool = True  # False: correct() raises LookupError, as for a query matching nothing

    def _add(self, text: str, kind: str, importance: float, source: str | None) -> dict[str, Any]:
        item = {"id": len(self.items) + 1, "text": text, "kind": kind, "importance": importance}
        item |= {"source": source, "score": importance}
        self.items.append(item)
        return item

    def recall(self, query: str, k: int | None = None) -> list[dict[str, Any]]:
        self.calls.append(("recall", (query, k)))
        words = set(query.lower().strip("?").split())
        hits = [i for i in self.items if words & set(i["text"].lower().split())]
        return sorted(hits, key=lambda i: -i["score"])[: k or 5]

    def teach(
        self, text: str, importance: float | None = None, tags: Sequence[str] = (), source: str | None = None
    ) -> dict[str, Any]:
        self.calls.append(("teach", (text, importance, tuple(tags), source)))
        return self._add(text, "fact", importance or 0.75, source)

    def correct(self, target: str, new_text: str) -> dict[str, Any]:
        self.calls.append(("correct", (target, new_text)))
        if not self.correct_finds:
            raise LookupError(f"nothing in memory matches {target!r}")
        return self._add(new_text, "correction", 0.95, f"correction of {target}")

    def forget(self, item_id: str) -> Any:
        self.calls.append(("forget", (item_id,)))
        before = len(self.items)
        self.items = [i for i in self.items if str(i["id"]) != str(item_id)]
        if len(self.items) == before:
            raise LookupError(f"no memory item {item_id}")
        return {"id": item_id, "forgotten": True}

    def status(self) -> dict[str, Any]:
        self.calls.append(("status", ()))
        return {"items": len(self.items)}

    def remember_exchange(
        self, question: str, answer: str, retrieved_ids: Sequence[Any], rating: int | None = None
    ) -> dict[str, Any]:
        self.calls.append(("remember_exchange", (question, answer, list(retrieved_ids), rating)))
        return self._add(f"Q: {question}\nA: {answer}", "interaction", 0.35, "chat")
