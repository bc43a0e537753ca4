"""Chats become training data: the corrected and the well-rated exchanges of ``chat_exchanges`` as
chat examples in a dataset's pool, and every corrected answer as a preference pair.

Which exchanges are kept is one filter (:func:`sift`), keep or drop with a reason:

* a corrected exchange is kept with the correction as its answer (its rating was of the wrong one);
* an uncorrected one is kept when rated ``min_rating`` or more, unless the same prompt got the same
  answer elsewhere and that answer was corrected: a correction wins over a rating.

The examples join the pool like generated ones (origin ``chat``, status ``new``): reviewed with
``ftf dataset review``, deduplicated by content (:func:`pool.uid_of`; a rerun adds nothing twice and
never revives what review deleted), then built and trained on as usual. An example the pool got from
an exchange before it was corrected is rejected, naming the correction.

Preference pairs are written in the conversational format TRL's ``DPOTrainer`` reads: ``prompt`` (the
messages before the answer), ``chosen`` (the correction) and ``rejected`` (the model's answer), each a
list of ``{"role", "content"}`` messages.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from finetuneflow.dataset.pool import LIVE, NewExample, add_examples, uid_of
from finetuneflow.dataset.step import SessionScope
from finetuneflow.records import Message
from finetuneflow.state import schema
from finetuneflow.state.datasets import split_path, write_jsonl

ORIGIN = "chat"
PREFERENCE = "preference"  # datasets/<name>/preference/train.jsonl


@dataclass(frozen=True)
class Exchange:
    """A logged exchange, as the filter sees it."""

    id: int
    session: str
    system: str | None
    history: list[Message]  # the earlier turns the model saw
    question: str
    answer: str
    rating: int | None = None
    correction: str | None = None

    @classmethod
    def of(cls, row: schema.ChatExchange) -> Exchange:
        return cls(row.id, row.session, row.system, list(row.history or []), row.question, row.answer,
                   row.rating, row.correction)  # fmt: skip

    @property
    def prompt(self) -> list[Message]:
        """The messages before the answer: system prompt, earlier turns, the question."""
        system: list[Message] = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, *self.history, {"role": "user", "content": self.question}]

    @property
    def corrected(self) -> bool:
        return bool(self.correction and self.correction.strip() != self.answer.strip())


@dataclass
class Kept:
    """An exchange that becomes an example, with the answer it teaches."""

    exchange: Exchange
    answer: str

    @property
    def messages(self) -> list[Message]:
        return [*self.exchange.prompt, {"role": "assistant", "content": self.answer}]


def sift(exchanges: list[Exchange], min_rating: int) -> tuple[list[Kept], Counter[str]]:
    """The exchanges that become examples, and the others counted by reason."""
    wrong = {_key(e.prompt, e.answer) for e in exchanges if e.corrected}
    kept: list[Kept] = []
    dropped: Counter[str] = Counter()
    for e in exchanges:
        if e.corrected:
            kept.append(Kept(e, str(e.correction).strip()))
        elif e.rating is None:
            dropped["unrated"] += 1
        elif e.rating < min_rating:
            dropped[f"rated below {min_rating}"] += 1
        elif _key(e.prompt, e.answer) in wrong:
            dropped["the same answer was corrected in another exchange"] += 1
        else:
            kept.append(Kept(e, e.answer.strip()))
    return kept, dropped


def _key(prompt: list[Message], answer: str) -> str:
    return uid_of([*prompt, {"role": "assistant", "content": answer.strip()}])


def preference_pairs(exchanges: list[Exchange]) -> list[dict[str, Any]]:
    """``{"prompt", "chosen", "rejected"}`` per corrected exchange, oldest first (TRL's format)."""
    return [
        {
            "prompt": e.prompt,
            "chosen": [{"role": "assistant", "content": str(e.correction).strip()}],
            "rejected": [{"role": "assistant", "content": e.answer.strip()}],
        }
        for e in exchanges
        if e.corrected
    ]


@dataclass
class ChatsReport:
    """What ``from_chats_step`` did."""

    exchanges: int = 0
    corrected: int = 0  # kept with their correction
    rated: int = 0  # kept for their rating
    added: int = 0  # new pool rows
    already_in_pool: int = 0  # the same content was there (in any status)
    superseded: int = 0  # live pool rows of an answer corrected since: now rejected
    dropped: dict[str, int] = field(default_factory=dict)
    preference_pairs: int = 0
    preference_path: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def from_chats_step(
    sessions: SessionScope, project_id: int, dataset: str, out_dir: Path, min_rating: int = 4
) -> ChatsReport:
    """Add the project's corrected and well-rated exchanges to the pool of ``dataset`` and write the
    preference pairs into ``out_dir/preference/train.jsonl`` (when there is a correction).

    Raises:
        ValueError: ``min_rating`` is not 1-5.
    """
    if isinstance(min_rating, bool) or not isinstance(min_rating, int) or not 1 <= min_rating <= 5:
        raise ValueError(f"min_rating must be a whole number from 1 to 5, got {min_rating!r}")
    with sessions() as s:
        rows = s.scalars(
            select(schema.ChatExchange)
            .where(schema.ChatExchange.project_id == project_id)
            .order_by(schema.ChatExchange.id)
        )
        exchanges = [Exchange.of(r) for r in rows]
        kept, dropped = sift(exchanges, min_rating)
        added, known = add_examples(s, project_id, dataset, [_example(k) for k in kept])
        superseded = _reject_corrected(s, project_id, dataset, [k for k in kept if k.exchange.corrected])
    report = ChatsReport(len(exchanges), sum(k.exchange.corrected for k in kept), 0, added, known, superseded)
    report.rated = len(kept) - report.corrected
    report.dropped = dict(dropped)
    pairs = preference_pairs(exchanges)
    if pairs:
        path = split_path(out_dir, PREFERENCE, "train")
        report.preference_pairs = write_jsonl(path, pairs)
        report.preference_path = str(path)
    return report


def _example(kept: Kept) -> NewExample:
    e = kept.exchange
    meta = {"exchange_id": e.id, "corrected": e.corrected, "rating": e.rating}
    # a correction is the person's own answer: the rating they gave the wrong one does not carry over
    rating = None if e.corrected else e.rating
    return NewExample(kept.messages, ORIGIN, f"chat:{e.session}", meta=meta, rating=rating)


def _reject_corrected(s: Session, project_id: int, dataset: str, corrected: list[Kept]) -> int:
    """Reject the live, unedited chat rows that teach a corrected answer: the old answer of a
    corrected exchange (or an earlier correction of it), or the same answer to the same prompt
    from another exchange."""
    right = {k.exchange.id: uid_of(k.messages) for k in corrected}
    wrong = {_key(k.exchange.prompt, k.exchange.answer): k.exchange.id for k in corrected}
    rows = s.scalars(
        select(schema.Example).where(
            schema.Example.project_id == project_id,
            schema.Example.dataset == dataset,
            schema.Example.origin == ORIGIN,
            schema.Example.status.in_(LIVE),
            schema.Example.edited.is_(False),
        )
    )
    n = 0
    for row in rows:
        own = row.meta.get("exchange_id")
        by = wrong.get(row.uid, own if own in right and row.uid != right[own] else None)
        if by is not None:
            row.status, row.reason = "rejected", f"corrected in chat (exchange {by})"
            n += 1
    return n
