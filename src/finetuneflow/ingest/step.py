"""The ingest step: discover files, read them (in parallel), clean, chunk by tokens, deduplicate,
optionally scrub PII, and store with provenance.

One bad file never stops the others: each file gets a status and its problems in the report, and
the CLI's exit code says whether any file failed. Unchanged files (same sha256) are skipped; a
changed file's old chunks are replaced.
"""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from finetuneflow import paths
from finetuneflow.config import setting
from finetuneflow.events import Emitter, EventSink
from finetuneflow.ingest.boilerplate import strip_repeated_lines
from finetuneflow.ingest.chunking import SpanFn, chunk_text, hf_span_fn
from finetuneflow.ingest.dedup import DedupConfig
from finetuneflow.ingest.domains import COLLECTION_FILE, collection_info
from finetuneflow.ingest.pii import scrub
from finetuneflow.ingest.readers import SUPPORTED_EXTENSIONS, read_file
from finetuneflow.ingest.store import DedupIndex, forget_file_chunks, store_units
from finetuneflow.records import ReaderError, SourceRecord
from finetuneflow.state import schema, session_scope
from finetuneflow.state.repo import get_or_create_project

SKIP_DIRS = {"node_modules", "__pycache__", "site-packages"}
POOL_MIN_FILES = 8  # below this, starting worker processes costs more than it saves


@dataclass
class IngestConfig:
    """How files are read, chunked, cleaned and deduplicated."""

    tokenizer: str = setting("smollm2-135m-instruct", "Model whose tokenizer counts chunk tokens.")
    max_tokens: int = setting(512, "Largest chunk, in tokens of that tokenizer.")
    overlap: int = setting(50, "Tokens repeated between consecutive chunks of a document.")
    max_file_mb: float = setting(200.0, "Files larger than this are refused (with a message), not read.")
    min_chars: int = setting(20, "Chunks shorter than this many characters are dropped (and recorded).")
    dedup: bool = setting(True, "Drop exact and near-duplicate chunks within the project (recorded).")
    near_threshold: float = setting(
        0.8, "Jaccard similarity (character 5-grams) that counts as near-duplicate."
    )
    num_perm: int = setting(128, "MinHash permutations for near-duplicate detection.")
    shingle: int = setting(5, "Character n-gram length for near-duplicate detection.")
    scrub_pii: bool = setting(
        False, "Replace e-mails, phones, IPs, IBANs, cards, keys with typed placeholders."
    )
    domain: str = setting("", "Only ingest collections of this domain ('' = everything).")
    workers: int = setting(0, "Processes reading files in parallel (0 = all cores, 1 = in-process).")

    def problems(self) -> list[str]:
        out = []
        if self.max_tokens < 16:
            out.append("max_tokens: must be >= 16")
        if not 0 <= self.overlap < self.max_tokens // 2:
            out.append("overlap: must be >= 0 and less than half of max_tokens")
        if self.max_file_mb <= 0:
            out.append("max_file_mb: must be > 0")
        if self.min_chars < 0 or self.workers < 0:
            out.append("min_chars, workers: must be >= 0")
        out += self.dedup_config().problems()
        return out

    def dedup_config(self) -> DedupConfig:
        return DedupConfig(num_perm=self.num_perm, shingle=self.shingle, threshold=self.near_threshold)


@dataclass
class FileReport:
    """What happened to one file: ingested | unchanged | partial | failed | skipped."""

    path: str
    status: str
    chunks: int = 0
    problems: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    domain: str | None = None


@dataclass
class IngestReport:
    files: list[FileReport]
    pii: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> list[FileReport]:
        return [f for f in self.files if f.status == "failed"]

    def counts(self) -> dict[str, int]:
        return dict(Counter(f.status for f in self.files))

    def dropped(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for f in self.files:
            total.update(f.dropped)
        return dict(total)


@dataclass
class Candidate:
    """A discovered file and the ingest root it was found under."""

    file: Path
    name: str
    root: Path
    explicit: bool = False  # named by the user, not found by walking a folder


def discover(inputs: list[Path]) -> Iterator[Candidate]:
    """Every file under ``inputs``; hidden entries and dependency folders are skipped, and
    collection declarations are read, not ingested."""
    for root in inputs:
        root = root.expanduser()
        if not root.is_dir():
            yield Candidate(root, root.name if root.is_file() else str(root), root.parent, explicit=True)
            continue
        for file in sorted(root.rglob("*")):
            rel = file.relative_to(root)
            if any(p.startswith(".") or p in SKIP_DIRS for p in rel.parts) or file.name == COLLECTION_FILE:
                continue
            if file.is_file():
                yield Candidate(file, str(Path(root.name) / rel), root)


def _outside(c: Candidate) -> bool:
    return not c.explicit and not c.file.resolve().is_relative_to(c.root.resolve())


@dataclass
class Parsed:
    """A file as read by a worker (picklable)."""

    records: list[SourceRecord]
    problems: list[str]
    failed: bool = False
    boilerplate_lines: int = 0


def parse(path: Path) -> Parsed:
    """Read one file and strip repeated page headers/footers. Never raises."""
    try:
        result = read_file(path)
    except ReaderError as err:
        return Parsed([], [str(err)], failed=True)
    except Exception as err:  # a reader bug must not take the whole ingest down
        return Parsed(
            [], [f"internal error while reading ({type(err).__name__}: {err}); please report it"], True
        )
    records, removed = strip_repeated_lines(result.records)
    return Parsed(records, result.problems, False, removed)


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


def scrub_units(units: list[dict[str, Any]], counts: Counter[str]) -> None:
    """Replace PII in chunk text and message contents, counting per type."""
    for unit in units:
        unit["text"], found = scrub(unit["text"])
        counts.update(found)
        for msg in unit["messages"] or []:
            msg["content"], _ = scrub(msg["content"])  # same PII as the rendered text: counted once


def _precheck(session: Session, project_id: int, c: Candidate, cfg: IngestConfig) -> FileReport | None:
    """A report when the file needs no reading (missing, refused, unchanged, other domain)."""
    if not c.file.exists():
        return FileReport(c.name, "failed", problems=["no such file or folder"])
    if c.file.is_symlink() and _outside(c):
        return FileReport(
            c.name, "skipped", problems=["symlink pointing outside the ingested folder; not followed"]
        )
    if c.file.suffix and c.file.suffix.lower() not in SUPPORTED_EXTENSIONS:
        return FileReport(c.name, "skipped", problems=[f"unsupported type '{c.file.suffix}'"])
    size = c.file.stat().st_size
    if size > cfg.max_file_mb * 1024 * 1024:
        return FileReport(
            c.name, "failed", problems=[f"{size / 2**20:.0f} MB is over max_file_mb={cfg.max_file_mb}"]
        )
    if cfg.domain:
        info = collection_info(c.file, c.root)
        if not info or info["domain"] != cfg.domain:
            return FileReport(c.name, "skipped", problems=[f"not in a '{cfg.domain}' collection"])
    row = _file_row(session, project_id, c.name)
    if row is not None and row.sha256 == _sha256(c.file) and row.status != "failed":
        return FileReport(c.name, "unchanged")
    return None


def _file_row(session: Session, project_id: int, name: str) -> schema.File | None:
    query = select(schema.File).where(schema.File.project_id == project_id, schema.File.path == name)
    return session.scalar(query)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parse_all(files: list[Path], workers: int) -> Iterator[Parsed]:
    if workers == 1 or len(files) < POOL_MIN_FILES:
        yield from map(parse, files)
        return
    from finetuneflow.hardware import available_cores

    with ProcessPoolExecutor(max_workers=workers or available_cores()) as pool:
        yield from pool.map(parse, files, chunksize=4)


def ingest(
    inputs: list[Path], project: str, cfg: IngestConfig, on_event: EventSink | None = None
) -> IngestReport:
    """Ingest files and folders into ``project``; returns a per-file report (never raises for a bad file)."""
    from finetuneflow.models.load import load_tokenizer
    from finetuneflow.models.resolve import resolve_model

    emit = Emitter("ingest", on_event)
    emit("tokenizer", message=f"loading tokenizer of {cfg.tokenizer}")
    spans = hf_span_fn(load_tokenizer(resolve_model(cfg.tokenizer)))
    candidates = list(discover(inputs))
    reports: dict[int, FileReport] = {}
    index = DedupIndex(cfg.dedup_config(), cfg.dedup)
    with session_scope() as session:
        project_id = get_or_create_project(session, project).id
        for i, c in enumerate(candidates):
            try:
                early = _precheck(session, project_id, c, cfg)
            except (ReaderError, OSError) as err:
                early = FileReport(c.name, "failed", problems=[str(err)])
            if early is not None:
                reports[i] = early
        index.load(session, project_id)
    todo = [i for i in range(len(candidates)) if i not in reports]
    pii: Counter[str] = Counter()
    parsed = _parse_all([candidates[i].file for i in todo], cfg.workers)
    for n, (i, result) in enumerate(zip(todo, parsed, strict=True)):
        emit("files", n, len(todo), message=candidates[i].name)
        with session_scope() as session:  # one transaction per file: a crash keeps what is done
            reports[i] = _store(session, project, project_id, candidates[i], result, spans, cfg, index, pii)
    emit("files", len(todo), len(todo), message="done")
    return IngestReport([reports[i] for i in range(len(candidates))], dict(pii))


def _store(
    session: Session,
    project: str,
    project_id: int,
    c: Candidate,
    result: Parsed,
    spans: SpanFn,
    cfg: IngestConfig,
    index: DedupIndex,
    pii: Counter[str],
) -> FileReport:
    records, problems, failed = result.records, result.problems, result.failed
    info = collection_info(c.file, c.root)
    domain = info["domain"] if info else None
    units = to_units(records, spans, cfg)
    for unit in units:
        unit["domain"] = domain
        if info:
            unit["meta"] = {
                **unit["meta"],
                "tags": sorted({*unit["meta"].get("tags", []), *info["tags"]}),
                "collection": info["collection"],
                "db": info["db"],
                "space": info["space"],
            }
    if cfg.scrub_pii:
        scrub_units(units, pii)
    data = c.file.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    stored = paths.project_dir(project) / "raw" / f"{sha[:16]}{c.file.suffix.lower()}"
    if not stored.exists():
        shutil.copyfile(c.file, stored)  # keep the exact bytes: provenance, and nothing is lost
    row = _file_row(session, project_id, c.name)
    if row is None:
        row = schema.File(project_id=project_id, path=c.name)
        session.add(row)
    else:
        index.excluded.update(forget_file_chunks(session, row.id))
    status = "failed" if failed or not units else ("partial" if problems else "ingested")
    row.stored_as, row.sha256, row.size, row.status, row.problems = (
        str(stored),
        sha,
        len(data),
        status,
        problems,
    )
    session.flush()
    dropped = store_units(session, project_id, row.id, units, index, cfg.min_chars)
    if result.boilerplate_lines:
        dropped["header/footer lines"] = result.boilerplate_lines
    kept = len(units) - sum(v for k, v in dropped.items() if k != "header/footer lines")
    return FileReport(c.name, status, kept, problems, dict(dropped), domain)
