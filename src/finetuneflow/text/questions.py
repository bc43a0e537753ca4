"""Questions in chat rows: the conversation up to the last answer, and that answer as the reference.

Shared by evaluation (its question sets) and training (a recall probe while it trains), so both
draw the same questions for the same seed and score them the same way (:mod:`.scores`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from finetuneflow.records import Message


@dataclass(frozen=True)
class Question:
    """One question: the conversation up to the answer, the reference answer and any other
    acceptable wordings of it (each score takes the best over ``reference`` and ``also``), and
    the ingested chunk it was written from (``chunk_id``, None when unknown)."""

    id: str
    prompt: list[Message]
    reference: str
    source: str = ""
    also: tuple[str, ...] = field(default=())
    chunk_id: int | None = None

    @property
    def text(self) -> str:
        """The question as asked: the last message before the answer."""
        return self.prompt[-1]["content"] if self.prompt else ""

    @property
    def references(self) -> tuple[str, ...]:
        return (self.reference, *self.also)


def question_of(record: dict[str, Any]) -> Question | None:
    """The question a chat row asks (None for a row without an assistant turn after a prompt)."""
    messages = record.get("messages") or []
    answers = [k for k, m in enumerate(messages) if m.get("role") == "assistant"]
    if not answers or answers[-1] == 0:
        return None
    last = answers[-1]
    chunk = record.get("chunk_id")
    return Question(
        str(record.get("id", "")),
        list(messages[:last]),
        messages[last]["content"],
        record.get("source", ""),
        chunk_id=chunk if isinstance(chunk, int) else None,
    )


def sample(records: list[dict[str, Any]], n: int, seed: int, name: str) -> list[Question]:
    """``n`` questions of ``records`` drawn with ``seed`` (all when fewer), in file order."""
    questions = [q for q in map(question_of, records) if q is not None]
    if len(questions) <= n:
        return questions
    keep = set(random.Random(f"{seed}:{name}").sample(range(len(questions)), n))
    return [q for i, q in enumerate(questions) if i in keep]
