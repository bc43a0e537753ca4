"""One large file through the ingest in bounded memory: its chunk rows made and stored in batches.

Files over ``segment_mb`` come here, one at a time in the main process, after the small files
(which workers prepare many at a time). Records stream from :func:`~finetuneflow.ingest.stream.
stream_items`, long text is chunked in windows, and every batch of chunk rows is signed, matched
against the project's index and written in its own transaction, so neither the text, its tokens,
nor its chunks are ever all in memory. The file row is written first as failed ("did not finish")
and given its real status at the end: an interrupted ingest leaves an honest row.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from finetuneflow.errors import ReaderError
from finetuneflow.ingest.config import IngestConfig
from finetuneflow.ingest.limits import applied
from finetuneflow.ingest.prepare import (
    collection_of,
    count_tokens,
    scrub_units,
    tag_units,
    text_units,
    to_units,
)
from finetuneflow.ingest.raw import member_name
from finetuneflow.ingest.readers import ReadResult, non_empty
from finetuneflow.ingest.stream import LongText, Progress, StreamLog, stream_items
from finetuneflow.records import SourceRecord
from finetuneflow.text.dedup import dedup_keys

UNITS_PER_BATCH = 1000  # chunk rows signed and stored per transaction (~2 MB of text at 512 tokens)
RECORDS_PER_BATCH = 512  # short records counted and chunked together
UNFINISHED = "the ingest stopped before this file was finished; ingest it again"

Batch = tuple[list[dict[str, Any]], list[str], np.ndarray]
"""Chunk rows, their exact keys and their MinHash signatures."""


@dataclass
class LargeFile:
    """What reading one large file gave besides its batches."""

    log: StreamLog = field(default_factory=StreamLog)
    pii: Counter[str] = field(default_factory=Counter)
    domain: str | None = None


def copy_of(path: Path, raw_dir: Path) -> tuple[str, int, str]:
    """(sha256, size, stored_as) of a large file, its exact copy written under ``raw_dir``
    (atomically, a no-op when present) without holding it in memory."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    sha = digest.hexdigest()
    stored = raw_dir / member_name(sha, path.suffix)
    if not stored.exists():
        raw_dir.mkdir(parents=True, exist_ok=True)
        tmp = stored.with_name(f".{stored.name}.{os.getpid()}.tmp")
        shutil.copyfile(path, tmp)
        os.replace(tmp, stored)
    return sha, size, str(stored)


def batches(path: Path, root: Path, cfg: IngestConfig, out: LargeFile, progress: Progress) -> Iterator[Batch]:
    """The chunk rows of ``path`` in signed batches (the tokenizer context must be set up:
    :func:`~finetuneflow.ingest.prepare.init_worker`).

    Raises:
        ReaderError: the file cannot be used (nothing usable in it, a limit passed, damaged).
    """
    info = collection_of(path.parent, root)
    out.domain = info["domain"] if info else None
    produced = 0
    with applied(cfg.limits()):
        for units in _unit_batches(path, cfg, out.log, progress):
            tag_units(units, info)
            if cfg.scrub_pii:
                scrub_units(units, out.pii)
            keys, sigs = dedup_keys([u["text"] for u in units], cfg.dedup_config())
            produced += len(units)
            yield units, keys, sigs
        if not produced:
            non_empty(ReadResult([], out.log.problems), "records")


def _unit_batches(
    path: Path, cfg: IngestConfig, log: StreamLog, progress: Progress
) -> Iterator[list[dict[str, Any]]]:
    records: list[SourceRecord] = []
    for item in stream_items(path, log, progress):
        if isinstance(item, LongText):
            yield from _records_units(records, cfg)
            records = []
            rows = text_units(SourceRecord("text", "", meta=item.meta), item.segments, cfg)
            while batch := list(islice(rows, UNITS_PER_BATCH)):
                yield batch
        else:
            records.append(item)
            if len(records) >= RECORDS_PER_BATCH:
                yield from _records_units(records, cfg)
                records = []
    yield from _records_units(records, cfg)


def _records_units(records: list[SourceRecord], cfg: IngestConfig) -> Iterator[list[dict[str, Any]]]:
    if records:
        units = to_units(records, count_tokens(records, cfg), cfg)
        for start in range(0, len(units), UNITS_PER_BATCH):
            yield units[start : start + UNITS_PER_BATCH]


def failure(path: Path, err: Exception) -> str:
    """The report line of a large file that could not be read."""
    if isinstance(err, ReaderError):
        said = str(err)  # read_file's messages start with the name already
        return said if said.startswith(f"{path.name}: ") else f"{path.name}: {said}"
    if isinstance(err, OSError):
        return f"{path.name}: cannot read the file ({err.strerror or err})"
    return f"internal error while reading ({type(err).__name__}: {err})"
