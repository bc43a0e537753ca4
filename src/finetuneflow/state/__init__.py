"""Persistent state: the SQLite database (SQLAlchemy 2 + Alembic migrations)."""

from finetuneflow.state.db import open_db, session_scope
from finetuneflow.state.schema import (
    ChatExchange,
    Chunk,
    Example,
    File,
    Job,
    JobEvent,
    LLMCall,
    MemoryItem,
    Project,
    Run,
)

__all__ = [
    "ChatExchange",
    "Chunk",
    "Example",
    "File",
    "Job",
    "JobEvent",
    "LLMCall",
    "MemoryItem",
    "Project",
    "Run",
    "open_db",
    "session_scope",
]
