"""The size and depth limits readers apply, and the messages that name them.

A limit is a setting (:class:`~finetuneflow.ingest.config.IngestConfig`), never an accident: a
refusal says which limit was passed and which flag raises it. Readers are plain functions of a
path, so the limits of the current ingest reach them through :func:`applied`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one ingest accepts (sizes in characters or bytes)."""

    max_depth: int = 100
    max_record_mb: float = 64.0
    segment: int = 2**20  # characters or bytes read at a time

    @property
    def max_record(self) -> int:
        """``max_record_mb`` in bytes (or characters)."""
        return int(self.max_record_mb * 2**20)


_DEFAULT = Limits()
_CURRENT: ContextVar[Limits | None] = ContextVar("ingest_limits", default=None)


def current() -> Limits:
    """The limits of the ingest running in this context (the defaults outside one)."""
    return _CURRENT.get() or _DEFAULT


@contextmanager
def applied(limits: Limits) -> Iterator[None]:
    """Make ``limits`` the current ones for the duration."""
    token = _CURRENT.set(limits)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def past_the_stack() -> str:
    """The refusal of a file nested deeper than Python's call stack lets a reader follow (any
    format; below ``max_depth``, which raising would not help)."""
    return (
        "nested deeper than can be read here (past Python's recursion limit, under "
        f"max_depth={current().max_depth}); flatten the nesting or split the file"
    )


def too_deep(depth: int) -> str:
    """The refusal of JSON nested ``depth`` levels deep (or more)."""
    limit = current().max_depth
    return (
        f"JSON nested {depth}+ levels deep is over max_depth={limit}; "
        f"raise it with --max-depth (or max_depth in the config) if the file is meant to be that deep "
        f"(add --reread when the file itself did not change)"
    )


def too_long(what: str, size: int) -> str:
    """The refusal of one record of ``size`` bytes or characters."""
    limit = current().max_record_mb
    return (
        f"{what} of {size / 2**20:.3g} MB is over max_record_mb={limit:g}; "
        f"raise it with --max-record-mb (or max_record_mb in the config; add --reread when the file "
        f"itself did not change)"
    )


def too_big(size: int, max_file_mb: float) -> str:
    """The refusal of a whole file of ``size`` bytes."""
    return (
        f"{size / 2**20:.3g} MB is over max_file_mb={max_file_mb:g}; "
        f"raise it with --max-file-mb (or max_file_mb in the config)"
    )
