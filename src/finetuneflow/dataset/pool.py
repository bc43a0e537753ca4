"""The database side of datasets: the example pool and the LLM call log.

Generation adds LLM examples (kept ones as 'new', dropped ones as 'rejected' with the reason) and
logs every call; a rerun loads the logged answers so only missing chunks are asked again. The
build syncs converter examples into the pool (keeping review decisions) and reads the live rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from finetuneflow.dataset.convert import ConvertedExample, DatasetConfig, content_uid
from finetuneflow.dataset.generate import ChunkIn, Generated
from finetuneflow.records import Message
from finetuneflow.state import schema

LIVE = ("new", "approved")  # rejected (by a generation filter) and deleted (by a person) are never built


def drop_reason(row: schema.Example, cfg: DatasetConfig) -> str | None:
    """Why a build leaves this pool row out, or None when it keeps it: the one place the status,
    domain and rating rules live (see ``DatasetConfig.min_rating`` and ``rated_only``).

    Approval only makes a row live; it does not lift a low rating, and an unrated row (approved or
    not) passes ``min_rating`` unless ``rated_only``.
    """
    if row.status == "rejected":
        return f"rejected at generation: {row.reason or 'no reason recorded'}"
    if row.status not in LIVE:
        return "deleted in review"
    if cfg.domain and row.domain != cfg.domain:
        return f"not in domain {cfg.domain!r}"
    if row.rating is None:
        return "unrated (rated_only)" if cfg.rated_only else None
    return f"rating below {cfg.min_rating}" if row.rating < cfg.min_rating else None


def uid_of(messages: list[Message] | None, text: str | None = None) -> str:
    """Stable id of an example's content (the same content is the same example): the converters'
    :func:`~finetuneflow.dataset.convert.content_uid`, so a generated pair equal to a Q&A row is one row.
    Rows stored before the two agreed keep their old uid when their text is not ASCII (JSON-escaped)."""
    return content_uid("chat", messages) if messages is not None else content_uid("text", text)


def load_chunks(session: Session, project_id: int, domain: str = "") -> list[ChunkIn]:
    """Kept text chunks of the project, in file order."""
    q = (
        select(schema.Chunk, schema.File.path)
        .join(schema.File, schema.File.id == schema.Chunk.file_id)
        .where(
            schema.Chunk.project_id == project_id,
            schema.Chunk.kind == "text",
            schema.Chunk.drop_reason.is_(None),
        )
        .order_by(schema.Chunk.file_id, schema.Chunk.idx)
    )
    if domain:
        q = q.where(schema.Chunk.domain == domain)
    return [ChunkIn(c.id, path, c.text, c.n_tokens, c.domain) for c, path in session.execute(q).tuples()]


def load_cache(session: Session, project_id: int, dataset: str) -> dict[str, str]:
    """Key -> response of every successful logged call of this dataset's generation."""
    rows = session.execute(
        select(schema.LLMCall.key, schema.LLMCall.response).where(
            schema.LLMCall.project_id == project_id,
            schema.LLMCall.dataset == dataset,
            schema.LLMCall.status == "ok",
        )
    )
    return {key: response for key, response in rows if response is not None}


def fact_id(chunk_id: int, question: str) -> str:
    """The group id every wording of one generated question shares: dedup keeps its paraphrases,
    the split keeps them on one side."""
    return hashlib.sha256(f"{chunk_id}:{question}".encode()).hexdigest()[:16]


def store_generated(
    session: Session, project_id: int, dataset: str, result: Generated, system: str = ""
) -> tuple[int, int]:
    """Log the chunk's new calls and add its examples; returns (added, already there)."""
    for call in result.calls:
        if call.cached:
            continue
        session.add(
            schema.LLMCall(
                project_id=project_id,
                dataset=dataset,
                key=call.key,
                purpose=call.purpose,
                chunk_id=result.chunk.id,
                model=call.model,
                request=call.request,
                response=call.response,
                status="ok" if call.error is None else "error",
                error=call.error,
                prompt_tokens=call.prompt_tokens,
                completion_tokens=call.completion_tokens,
                seconds=call.seconds,
                attempts=call.attempts,
            )
        )
    chunk = result.chunk
    Item = tuple[list[Message], str, str | None, dict[str, str]]
    kept: list[Item] = [
        (w.messages(system), "new", None, {"fact": fact_id(chunk.id, p.question)} if p.grouped else {})
        for p in result.pairs
        for w in p.wordings()
    ]
    dropped: list[Item] = [
        (r["messages"], "rejected", r["reason"], {}) for r in result.rejected if "messages" in r
    ]
    rows = [
        NewExample(
            messages,
            "llm",
            chunk.source,
            status,
            reason,
            chunk.id,
            chunk.domain,
            {"chunk_id": chunk.id} | fact,
        )
        for messages, status, reason, fact in kept + dropped
    ]
    return add_examples(session, project_id, dataset, rows)


@dataclass
class NewExample:
    """A chat example to add to a pool (:func:`add_examples`)."""

    messages: list[Message]
    origin: str  # llm | chat
    source: str  # what the split groups by (a file; for a chat, its session)
    status: str = "new"
    reason: str | None = None  # why it is rejected
    chunk_id: int | None = None
    domain: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    rating: int | None = None


def add_examples(session: Session, project_id: int, dataset: str, rows: list[NewExample]) -> tuple[int, int]:
    """Add the rows whose content (:func:`uid_of`) the dataset's pool does not hold yet, in any
    status: a deleted or rejected example stays as review left it. Returns (added, already there)."""
    uids = [uid_of(row.messages) for row in rows]
    known = set(
        session.scalars(
            select(schema.Example.uid).where(
                schema.Example.project_id == project_id,
                schema.Example.dataset == dataset,
                schema.Example.uid.in_(uids),
            )
        )
    )
    added = 0
    for uid, row in zip(uids, rows, strict=True):
        if uid in known:
            continue
        known.add(uid)
        added += 1
        session.add(
            schema.Example(
                project_id=project_id,
                dataset=dataset,
                uid=uid,
                kind="chat",
                split="",
                origin=row.origin,
                status=row.status,
                reason=row.reason,
                source=row.source,
                chunk_id=row.chunk_id,
                messages=row.messages,
                meta=row.meta,
                domain=row.domain,
                rating=row.rating,
            )
        )
    return added, len(rows) - added


def sync_converted(session: Session, project_id: int, dataset: str, examples: list[ConvertedExample]) -> None:
    """Make the pool's converter rows match ``examples``: new ones added, vanished ones removed
    (their source changed), review decisions (status, rating, edits) on the rest kept. An example
    whose content the pool already holds from elsewhere (a generated pair equal to a Q&A row) is
    that row: not added twice."""
    rows = session.scalars(
        select(schema.Example).where(
            schema.Example.project_id == project_id, schema.Example.dataset == dataset
        )
    )
    existing: dict[str, schema.Example] = {}
    others: set[str] = set()
    for row in rows:
        if row.origin == "converter":
            existing[row.uid] = row
        else:
            others.add(row.uid)
    wanted = {ex.id for ex in examples}
    gone = [row.id for uid, row in existing.items() if uid not in wanted and not row.edited]
    if gone:
        session.execute(delete(schema.Example).where(schema.Example.id.in_(gone)))
    for ex in examples:
        if ex.id in existing or ex.id in others:
            continue
        session.add(
            schema.Example(
                project_id=project_id,
                dataset=dataset,
                uid=ex.id,
                kind=ex.kind,
                split="",
                origin="converter",
                status="new",
                source=ex.source,
                chunk_id=ex.meta.get("chunk_id"),
                messages=ex.messages,
                text=ex.text,
                meta=ex.meta,
                domain=ex.meta.get("domain"),
            )
        )


def pool_rows(session: Session, project_id: int, dataset: str) -> list[schema.Example]:
    """Every pool row of the dataset (all statuses), in insertion order."""
    return list(
        session.scalars(
            select(schema.Example)
            .where(schema.Example.project_id == project_id, schema.Example.dataset == dataset)
            .order_by(schema.Example.id)
        )
    )


def as_record(row: schema.Example) -> dict[str, Any]:
    """A pool row as the JSON row the build works on (``pool_id`` links back for the split)."""
    out: dict[str, Any] = {
        "id": row.uid,
        "source": row.source,
        "pool_id": row.id,
        "origin": row.origin,
        "status": row.status,
        "rating": row.rating,
        "chunk_id": row.chunk_id,
    }
    if row.domain:
        out["domain"] = row.domain
    if (row.meta or {}).get("fact"):
        out["fact"] = row.meta["fact"]
    if row.kind == "chat":
        out["messages"] = row.messages
    else:
        out["text"] = row.text
    return out
