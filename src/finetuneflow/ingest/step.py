"""The ingest step: discover files, read them, chunk text by tokens, store with provenance.

One bad file never stops the others: each file gets a status and its problems in the report, and
the CLI's exit code says whether any file failed. Unchanged files (same sha256) are skipped; a
changed file's old chunks are replaced.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from finetuneflow import paths
from finetuneflow.config import setting
from finetuneflow.events import Emitter, EventSink
from finetuneflow.ingest.chunking import SpanFn, chunk_text, hf_span_fn
from finetuneflow.ingest.readers import SUPPORTED_EXTENSIONS, read_file
from finetuneflow.records import ReaderError, SourceRecord
from finetuneflow.state import schema, session_scope
from finetuneflow.state.repo import get_or_create_project


@dataclass
class IngestConfig:
    """How files are read and chunked."""

    tokenizer: str = setting("smollm2-135m-instruct", "Model whose tokenizer counts chunk tokens.")
    max_tokens: int = setting(512, "Largest chunk, in tokens of that tokenizer.")
    overlap: int = setting(50, "Tokens repeated between consecutive chunks of a document.")
    max_file_mb: float = setting(200.0, "Files larger than this are refused (with a message), not read.")

    def problems(self) -> list[str]:
        out = []
        if self.max_tokens < 16:
            out.append("max_tokens: must be >= 16")
        if not 0 <= self.overlap < self.max_tokens // 2:
            out.append("overlap: must be >= 0 and less than half of max_tokens")
        if self.max_file_mb <= 0:
            out.append("max_file_mb: must be > 0")
        return out


@dataclass
class FileReport:
    """What happened to one file: ingested | unchanged | partial | failed | skipped."""

    path: str
    status: str
    chunks: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class IngestReport:
    files: list[FileReport]

    @property
    def failed(self) -> list[FileReport]:
        return [f for f in self.files if f.status == "failed"]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.files:
            out[f.status] = out.get(f.status, 0) + 1
        return out


def discover(inputs: list[Path]) -> Iterator[tuple[Path, str]]:
    """(file, name to record) for every file under ``inputs``; hidden entries are skipped, and
    symlinks that lead outside the folder being walked are reported, never followed."""
    for root in inputs:
        root = root.expanduser()
        if root.is_file():
            yield root, root.name
            continue
        if not root.is_dir():
            yield root, str(root)
            continue
        for file in sorted(root.rglob("*")):
            rel = file.relative_to(root)
            if any(part.startswith(".") for part in rel.parts) or not file.is_file():
                continue
            yield file, str(Path(root.name) / rel)


def _outside(file: Path, inputs: list[Path]) -> bool:
    real = file.resolve()
    return not any(real.is_relative_to(r.expanduser().resolve()) for r in inputs if r.is_dir()) and not any(
        file == r.expanduser() for r in inputs
    )


def to_units(records: list[SourceRecord], spans: SpanFn, cfg: IngestConfig) -> list[dict[str, Any]]:
    """Pure core: records -> chunk rows (text records chunked by tokens, Q&A/conversations whole)."""
    units: list[dict[str, Any]] = []
    for rec in records:
        if rec.kind == "text":
            for c in chunk_text(rec.text, spans, cfg.max_tokens, cfg.overlap, page=rec.page):
                units.append(
                    dict(
                        kind="text",
                        text=c.text,
                        n_tokens=c.n_tokens,
                        page=c.page,
                        line=rec.line,
                        char_start=c.char_start,
                        char_end=c.char_end,
                        messages=None,
                        meta=rec.meta,
                    )
                )
        else:
            units.append(
                dict(
                    kind=rec.kind,
                    text=rec.text,
                    n_tokens=len(spans(rec.text)),
                    page=rec.page,
                    line=rec.line,
                    char_start=None,
                    char_end=None,
                    messages=rec.messages,
                    meta=rec.meta,
                )
            )
    return units


def ingest(
    inputs: list[Path], project: str, cfg: IngestConfig, on_event: EventSink | None = None
) -> IngestReport:
    """Ingest files and folders into ``project``; returns a per-file report (never raises for a bad file)."""
    from finetuneflow.models.load import load_tokenizer
    from finetuneflow.models.resolve import resolve_model

    emit = Emitter("ingest", on_event)
    emit("tokenizer", message=f"loading tokenizer of {cfg.tokenizer}")
    spans = hf_span_fn(load_tokenizer(resolve_model(cfg.tokenizer)))
    files = list(discover(inputs))
    reports: list[FileReport] = []
    with session_scope() as session:
        project_id = get_or_create_project(session, project).id
    for i, (file, name) in enumerate(files):
        emit("files", i, len(files), message=name)
        with session_scope() as session:  # one transaction per file: a crash keeps what is done
            reports.append(_ingest_one(session, project, project_id, file, name, inputs, spans, cfg))
    emit("files", len(files), len(files), message="done")
    return IngestReport(reports)


def _ingest_one(
    session: Session,
    project: str,
    project_id: int,
    file: Path,
    name: str,
    inputs: list[Path],
    spans: SpanFn,
    cfg: IngestConfig,
) -> FileReport:
    if not file.exists():
        return FileReport(name, "failed", problems=["no such file or folder"])
    if file.is_symlink() and _outside(file, inputs):
        return FileReport(
            name, "skipped", problems=["symlink pointing outside the ingested folder; not followed"]
        )
    if file.suffix.lower() not in SUPPORTED_EXTENSIONS:
        return FileReport(name, "skipped", problems=[f"unsupported type '{file.suffix}'"])
    size = file.stat().st_size
    if size > cfg.max_file_mb * 1024 * 1024:
        return FileReport(
            name, "failed", problems=[f"{size / 2**20:.0f} MB is over max_file_mb={cfg.max_file_mb}"]
        )
    data = file.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    row = session.scalar(
        select(schema.File).where(schema.File.project_id == project_id, schema.File.path == name)
    )
    if row is not None and row.sha256 == sha and row.status != "failed":
        return FileReport(name, "unchanged")
    try:
        result = read_file(file)
        records, problems = result.records, result.problems
    except ReaderError as err:
        records, problems = [], [str(err)]
    units = to_units(records, spans, cfg)
    status = "failed" if not units else ("partial" if problems else "ingested")
    stored = paths.project_dir(project) / "raw" / f"{sha[:16]}{file.suffix.lower()}"
    if not stored.exists():
        shutil.copyfile(file, stored)  # keep the exact bytes: provenance, and nothing is lost
    if row is None:
        row = schema.File(project_id=project_id, path=name)
        session.add(row)
    row.stored_as, row.sha256, row.size, row.status, row.problems = str(stored), sha, size, status, problems
    session.flush()
    session.execute(delete(schema.Chunk).where(schema.Chunk.file_id == row.id))
    session.add_all(
        schema.Chunk(project_id=project_id, file_id=row.id, idx=k, **u) for k, u in enumerate(units)
    )
    return FileReport(name, status, len(units), problems)
