"""The record types that flow between pipeline steps.

They are plain dataclasses so every step can be called (and tested) without a database:
readers yield :class:`SourceRecord`, the chunker yields :class:`Chunk`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

RecordKind = Literal["text", "qa", "conversation"]
Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}


@dataclass
class SourceRecord:
    """One unit read from a source file, with where it came from.

    ``text`` records are document text (one per PDF page, one per whole TXT/MD/DOCX file);
    ``qa`` and ``conversation`` records carry ``messages`` and a plain rendering in ``text``.
    """

    kind: RecordKind
    text: str
    page: int | None = None  # 1-based page number (PDF)
    line: int | None = None  # 1-based line / row number (CSV, JSONL)
    messages: list[Message] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Chunk:
    """A piece of a text record that fits the token budget; offsets index into the record's text."""

    text: str
    index: int
    n_tokens: int
    char_start: int
    char_end: int
    page: int | None = None
