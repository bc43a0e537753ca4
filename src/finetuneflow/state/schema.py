"""The tables: projects, files, chunks, examples, llm_calls, runs, jobs, job_events, chat_exchanges,
memory_items.

Migrations in ``migrations/versions`` create exactly these; a test checks the two agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class File(Base):
    """An ingested source file; ``sha256`` of its bytes lets re-ingest skip unchanged files."""

    __tablename__ = "files"
    __table_args__ = (UniqueConstraint("project_id", "path"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(Text)  # as given by the user, relative to the ingest root
    stored_as: Mapped[str] = mapped_column(Text)  # copy under the project's raw/ folder
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # ok | partial | failed
    problems: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Chunk(Base):
    """A unit of source material: a token-bounded text chunk, a Q&A pair or a conversation."""

    __tablename__ = "chunks"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # text | qa | conversation
    idx: Mapped[int] = mapped_column(Integer)  # order within the file
    text: Mapped[str] = mapped_column(Text)
    n_tokens: Mapped[int] = mapped_column(Integer)
    page: Mapped[int | None] = mapped_column(Integer, nullable=True)
    line: Mapped[int | None] = mapped_column(Integer, nullable=True)
    char_start: Mapped[int | None] = mapped_column(Integer, nullable=True)
    char_end: Mapped[int | None] = mapped_column(Integer, nullable=True)
    messages: Mapped[list[Any] | None] = mapped_column(nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    domain: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    content_hash: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    minhash: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # uint32 signature
    # dedup and filters never delete: a dropped chunk stays, with the reason (and what it duplicates)
    drop_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    duplicate_of: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Example(Base):
    """A candidate training example of a dataset, with the chunk it came from.

    Converters and the LLM generator add rows; review edits, rates, approves or deletes them
    (``status``); ``dataset build`` filters the live ones and assigns ``split``. Nothing is
    removed by a filter: a rejected row keeps its ``reason``.
    """

    __tablename__ = "examples"
    __table_args__ = (UniqueConstraint("project_id", "dataset", "uid", name="uq_examples_dataset_uid"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    dataset: Mapped[str] = mapped_column(String(64), index=True)
    uid: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # chat | text
    split: Mapped[str] = mapped_column(String(16))  # train | eval | heldout | '' (not built yet)
    origin: Mapped[str] = mapped_column(String(16), default="converter")  # converter | llm | chat
    # new | approved | rejected | deleted
    status: Mapped[str] = mapped_column(String(16), default="new", index=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # why rejected
    source: Mapped[str] = mapped_column(Text, default="")  # the source file (splits keep a file on one side)
    edited: Mapped[bool] = mapped_column(Boolean, default=False)  # a person changed it: rebuilds keep it
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    chunk_id: Mapped[int | None] = mapped_column(
        ForeignKey("chunks.id", ondelete="SET NULL"), nullable=True, index=True
    )
    messages: Mapped[list[Any] | None] = mapped_column(nullable=True)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    rating: Mapped[int | None] = mapped_column(Integer, nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    domain: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)


class LLMCall(Base):
    """One request to an LLM provider and its answer: the audit log, and what lets an interrupted
    generation resume (a call whose ``key`` already succeeded is not made again). No API key here."""

    __tablename__ = "llm_calls"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    dataset: Mapped[str] = mapped_column(String(64), index=True)
    key: Mapped[str] = mapped_column(String(64), index=True)  # sha256 of (purpose, model, prompt)
    purpose: Mapped[str] = mapped_column(String(16))  # generate | repair | judge | heldout | preview
    chunk_id: Mapped[int | None] = mapped_column(
        ForeignKey("chunks.id", ondelete="SET NULL"), nullable=True, index=True
    )
    model: Mapped[str] = mapped_column(Text)
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)
    response: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # ok | error
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Run(Base):
    """A training run; its folder holds the config, manifest, metrics and adapter.

    ``kind`` says what was trained: ``causal`` (a chat/text model, on a built dataset) or
    ``classify`` (a sequence classifier, on a labelled CSV, whose file name is then ``dataset``).
    """

    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="causal", server_default="causal", index=True)
    dataset: Mapped[str] = mapped_column(String(64))
    base_model: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # running | finished | failed
    path: Mapped[str] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Job(Base):
    """One invocation of a pipeline step (from the CLI now, from the worker later)."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), nullable=True, index=True
    )
    step: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # queued | running | finished | failed | cancelled
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    # set by whoever runs the job, every few seconds: a running job without one is stale
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    queue: Mapped[str | None] = mapped_column(String(32), nullable=True)  # None: run in the foreground
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # starts, re-deliveries included
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)


class JobEvent(Base):
    """One entry of a job's append-only history: ``seq`` counts from 1 per job (what a client
    replays from). ``kind``: queued, started, progress, retry, cancel, requeued, result, finished,
    failed, cancelled, lost. The ``jobs`` row is the summary of these, kept in the same transaction."""

    __tablename__ = "job_events"
    __table_args__ = (UniqueConstraint("job_id", "seq", name="uq_job_events_job_seq"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ChatExchange(Base):
    """One question and answer of a chat: what the model was shown (earlier turns, memories) and
    said, and what the person made of it (``rating``, ``correction``). ``ftf dataset from-chats``
    turns the corrected and well-rated ones into training examples."""

    __tablename__ = "chat_exchanges"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    session: Mapped[str] = mapped_column(String(32), index=True)  # one chat, until /reset
    turn: Mapped[int] = mapped_column(Integer)  # position in the session, from 0
    model: Mapped[str] = mapped_column(Text)  # the run id, or the base model's name
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # None: a base model
    system: Mapped[str | None] = mapped_column(Text, nullable=True)  # the system prompt, without memories
    history: Mapped[list[Any]] = mapped_column(default=list)  # earlier turns in the prompt (messages)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    retrieved: Mapped[list[Any]] = mapped_column(default=list)  # memories in the prompt: id, text, source
    retrieved_ids: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")  # memory item ids
    sampling: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    rating: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 1-5
    correction: Mapped[str | None] = mapped_column(Text, nullable=True)  # the right answer, by the person
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class MemoryItem(Base):
    """One thing the memory holds: a document chunk (``chunk_id``), a taught fact, an interaction or a
    correction, with its importance, tags, source and times. ``embedding`` (float32 bytes, by
    ``embedder``) is what the vector index file is rebuilt from: the index is derived, this is the record.

    Forgetting is soft (``forgotten_at``) until a purge deletes the row. A correction names the item it
    corrects (``corrects``), which keeps its text and points back (``superseded_by``): the history.
    """

    __tablename__ = "memory_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)  # document | fact | interaction | correction
    text: Mapped[str] = mapped_column(Text)
    importance: Mapped[float] = mapped_column(Float)  # 0-1
    tags: Mapped[list[Any]] = mapped_column(default=list)
    source: Mapped[str] = mapped_column(Text, default="")
    chunk_id: Mapped[int | None] = mapped_column(
        ForeignKey("chunks.id", ondelete="SET NULL"), nullable=True, index=True
    )
    exchange_id: Mapped[int | None] = mapped_column(
        ForeignKey("chat_exchanges.id", ondelete="SET NULL"), nullable=True, index=True
    )
    corrects: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the item this one corrects
    superseded_by: Mapped[int | None] = mapped_column(Integer, nullable=True)  # its correction
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # float32, L2-normalised
    embedder: Mapped[str | None] = mapped_column(String(128), nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    forgotten_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, index=True)
