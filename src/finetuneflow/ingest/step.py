"""The ingest step: discover files, read them (in parallel), clean, chunk by tokens, deduplicate,
optionally scrub PII, and store with provenance.

One bad file never stops the others: each file gets a status and its problems in the report, and
the CLI's exit code says whether any file failed. Unchanged files (same sha256) are skipped; a
changed file's old chunks are replaced.
"""

from __future__ import annotations

import errno
import gc
import os
import stat
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from finetuneflow import paths
from finetuneflow.errors import JobCancelled, ReaderError
from finetuneflow.events import Emitter, EventSink
from finetuneflow.ingest.config import IngestConfig
from finetuneflow.ingest.discover import Candidate, discover
from finetuneflow.ingest.domains import collection_info
from finetuneflow.ingest.large import UNFINISHED, LargeFile, batches, copy_of, failure
from finetuneflow.ingest.limits import too_big
from finetuneflow.ingest.prepare import Prepared, init_worker, prepare_batch
from finetuneflow.ingest.readers import SUPPORTED_EXTENSIONS
from finetuneflow.ingest.report import FileReport, IngestReport
from finetuneflow.ingest.sniff import HEAD_BYTES, plain_binary
from finetuneflow.ingest.store import DedupIndex, Pending, forget_file_chunks, insert_pending, plan_units
from finetuneflow.state import schema

_MISSING = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)  # what Path.exists() takes as "no"
POOL_MIN_FILES = 8  # below this, starting worker processes costs more than it saves
BATCH_FILES = 64  # files stored per transaction
WORKER_BATCH = 32  # files per worker task (signatures computed together)


def _outside(c: Candidate) -> bool:
    return not c.explicit and not c.file.resolve().is_relative_to(c.root.resolve())


def _precheck(known: dict[str, tuple[str, str]], c: Candidate, cfg: IngestConfig) -> FileReport | None:
    """A report when the file needs no reading (missing, refused, unchanged, other domain).

    Raises:
        OSError: the file cannot be looked at (other than missing: that is a report).
    """
    if c.skipped:
        return FileReport(c.name, "skipped", problems=[c.skipped])
    # One lstat answers "missing?", "symlink?" and the size of a plain file (three calls before).
    info = _stat(c.file, follow=False)
    if info is not None and stat.S_ISLNK(info.st_mode):
        info = _stat(c.file, follow=True)
        if info is not None and _outside(c):
            return FileReport(
                c.name, "skipped", problems=["symlink pointing outside the ingested folder; not followed"]
            )
    if info is None:
        return FileReport(c.name, "failed", problems=["no such file or folder"])
    if not stat.S_ISREG(info.st_mode):  # reading a named pipe would wait for a writer forever
        return FileReport(c.name, "skipped", problems=["not a regular file (a pipe, socket or device)"])
    if c.file.suffix and c.file.suffix.lower() not in SUPPORTED_EXTENSIONS:
        return FileReport(c.name, "skipped", problems=[f"unsupported type '{c.file.suffix}'"])
    if not c.file.suffix and _plain_binary(c.file):  # a program in bin/: a repo's folder ingests
        return FileReport(c.name, "skipped", problems=["binary data without an extension (a program?)"])
    size = info.st_size
    if size > cfg.max_file_mb * 1024 * 1024:
        return FileReport(c.name, "failed", problems=[too_big(size, cfg.max_file_mb)])
    if cfg.domain:
        collection = collection_info(c.file, c.root)
        if not collection or collection["domain"] != cfg.domain:
            return FileReport(c.name, "skipped", problems=[f"not in a '{cfg.domain}' collection"])
    sha, status = known.get(c.name, ("", ""))
    # reread: what a partial file skipped may read now (a raised --max-depth or --max-record-mb,
    # OCR installed since), as its problems' advice says; otherwise a re-run keeps every chunk id
    if sha and status != "failed" and not cfg.reread and sha == paths.sha256_file(c.file):
        return FileReport(c.name, "unchanged")
    return None


def _plain_binary(path: Path) -> bool:
    with path.open("rb") as handle:
        return plain_binary(handle.read(HEAD_BYTES))


def _stat(path: Path, follow: bool) -> os.stat_result | None:
    """``os.stat`` (or ``os.lstat``), None where ``Path.exists`` would say False."""
    try:
        return os.stat(path, follow_symlinks=follow)
    except OSError as err:
        if err.errno in _MISSING:
            return None
        raise


@contextmanager
def _worker_pool(cfg: IngestConfig, model_dir: Path, raw_dir: Path, files: int) -> Iterator[Executor | None]:
    """Processes to prepare ``files`` files, or None when doing it in-process is cheaper.

    They are started at once, so that their start-up (fork, loading the tokenizer: ~0.2 s each)
    overlaps the main process's prechecks instead of following them.
    """
    if cfg.workers == 1 or files < POOL_MIN_FILES:
        yield None
        return
    from finetuneflow.hardware import available_cores

    workers = cfg.workers or available_cores()
    init_args = (model_dir, cfg, raw_dir, True)
    with ProcessPoolExecutor(workers, initializer=init_worker, initargs=init_args) as pool:
        for _ in range(workers):
            pool.submit(int)  # a no-op task per worker: processes start when work is submitted
        yield pool


def _prepare_all(
    todo: list[Candidate], model_dir: Path, cfg: IngestConfig, raw_dir: Path, pool: Executor | None
) -> Iterator[Prepared]:
    items = [(c.file, c.root) for c in todo]
    batches = [items[k : k + WORKER_BATCH] for k in range(0, len(items), WORKER_BATCH)]
    if pool is None or len(todo) < POOL_MIN_FILES:
        init_worker(model_dir, cfg, raw_dir)
        for batch in batches:
            yield from prepare_batch(batch)
        return
    for prepared in pool.map(prepare_batch, batches):
        yield from prepared


@dataclass(frozen=True)
class Target:
    """Where an ingest writes, resolved by the caller (``api.ingest``) so the step resolves no names."""

    project_id: int
    raw_dir: Path  # exact copies of the files go here
    model_dir: Path  # the tokenizer that counts chunk tokens is read from here (in every worker)
    sessions: Callable[[], AbstractContextManager[Session]]  # one transaction per call: a batch


def ingest(
    inputs: list[Path], target: Target, cfg: IngestConfig, on_event: EventSink | None = None
) -> IngestReport:
    """Ingest files and folders into the target project; returns a per-file report (never raises for
    a bad file)."""
    emit = Emitter("ingest", on_event)
    with _frozen_heap():
        return _ingest(inputs, target, cfg, emit)


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """Keep the objects alive before the run out of garbage collection until it ends.

    A full collection walks every tracked object; with SQLAlchemy loaded (and torch/transformers
    when a caller imported them) that is 350,000+ objects, none of which an ingest frees, and it
    happened 6-8 times per 10,000 files: ~0.4 s of the main process's ~1.6 s. Forked workers
    inherit the frozen state. An application that froze objects itself is left alone.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _ingest(inputs: list[Path], target: Target, cfg: IngestConfig, emit: Emitter) -> IngestReport:
    candidates = list(discover(inputs))
    index = DedupIndex(cfg.dedup_config(), cfg.dedup)
    project_id, model_dir, raw_dir = target.project_id, target.model_dir, target.raw_dir
    with target.sessions() as session:
        rows = session.execute(
            select(schema.File.path, schema.File.sha256, schema.File.status).where(
                schema.File.project_id == project_id
            )
        )
        known = {path: (sha, status) for path, sha, status in rows}
        resigned = index.load(session, project_id)
    if resigned:
        emit("signatures", message=f"recomputed {resigned} signatures made under other settings")
    new_files = sum(c.name not in known for c in candidates)
    pii: Counter[str] = Counter()
    earlier = frozenset(path for path, (_, status) in known.items() if status != "failed")
    store = _Store(project_id, candidates, cfg, index, set(known), earlier)
    with _worker_pool(cfg, model_dir, raw_dir, new_files) as pool:
        reports = _prechecked(candidates, known, cfg)
        todo = [i for i in range(len(candidates)) if i not in reports]
        sizes = {i: _size(candidates[i].file) for i in todo}
        segment = cfg.limits().segment
        small = [i for i in todo if sizes[i] <= segment]
        large = [i for i in todo if sizes[i] > segment]
        progress = _Bytes(emit, sum(sizes.values()), cfg.limits().segment)
        prepared = _prepare_all([candidates[i] for i in small], model_dir, cfg, raw_dir, pool)
        for start in range(0, len(small), BATCH_FILES):
            batch = [(i, next(prepared)) for i in small[start : start + BATCH_FILES]]
            emit("files", start, len(todo), message=candidates[batch[0][0]].name)
            with target.sessions() as session:  # one transaction per batch: a crash keeps what is done
                for i, report in _store_batch(session, store, batch):
                    reports[i] = report
            for i, p in batch:
                pii.update(p.pii)
                progress.add(sizes[i], candidates[i].name)
    if large:
        init_worker(model_dir, cfg, raw_dir)  # the tokenizer, in this process
    for n, i in enumerate(large, start=len(small)):
        emit("files", n, len(todo), message=candidates[i].name)
        reports[i] = _ingest_large(target, store, candidates[i], progress)
        pii.update(store.pii)
        store.pii.clear()
    emit("files", len(todo), len(todo), message="done")
    return IngestReport([reports[i] for i in range(len(candidates))], dict(pii))


def _size(file: Path) -> int:
    try:
        return os.stat(file).st_size
    except OSError:
        return 0  # the reader reports why


class _Bytes:
    """The ``bytes`` progress stage: bytes of the files read so far, moving inside a large file."""

    def __init__(self, emit: Emitter, total: int, step: int) -> None:
        self.emit, self.total, self.step = emit, total, step  # at most one event per step read
        self.done = self.shown = 0

    def add(self, size: int, name: str) -> None:
        self.done += size
        self._show(self.done, name)

    def within(self, name: str) -> Callable[[int], None]:
        """A callback for the bytes read of the file ``name``, which starts at ``self.done``."""
        base = self.done

        def read(done: int) -> None:
            if base + done - self.shown >= self.step:
                self._show(base + done, name)

        return read

    def _show(self, done: int, name: str) -> None:
        self.shown = done
        self.emit("bytes", done, self.total, message=name)


def _ingest_large(target: Target, store: _Store, c: Candidate, progress: _Bytes) -> FileReport:
    """Read, chunk and store one large file in batches; see ``ingest.large``."""
    try:
        sha, size, stored_as = copy_of(c.file, target.raw_dir)
    except OSError as err:
        return FileReport(c.name, "failed", problems=[failure(c.file, err)])
    with target.sessions() as session:
        row = Prepared(sha, size, stored_as, problems=[UNFINISHED])
        file_id = _upsert_files(session, store, [(c.name, row, "failed")])[0]
    out, dropped, total, problems = LargeFile(), Counter[str](), 0, []
    try:
        for batch in batches(c.file, c.root, store.cfg, out, progress.within(c.name)):
            with target.sessions() as session:
                pending = Pending()
                dropped += plan_units(
                    store.project_id, file_id, batch, store.index, store.cfg.min_chars, pending, total
                )
                insert_pending(session, store.index, pending)
            total += len(batch[0])
    except JobCancelled:  # raised by the progress sink: the row stays unfinished, read again next time
        raise
    except Exception as err:  # one bad file never stops the others
        problems.append(failure(c.file, err))
    progress.done += size
    problems = out.log.problems + problems
    status = "failed" if not total else ("partial" if problems else "ingested")
    with target.sessions() as session:
        table: Any = schema.File.__table__
        session.execute(update(table).where(table.c.id == file_id).values(status=status, problems=problems))
    kept = total - sum(dropped.values())
    if out.log.boilerplate_lines:
        dropped["header/footer lines"] = out.log.boilerplate_lines
    store.pii.update(out.pii)
    notes = [*out.log.notes, *_replacing(store, c.name)]
    return FileReport(c.name, status, kept, problems, dict(dropped), out.domain, notes)


def _replacing(store: _Store, name: str) -> list[str]:
    """The note that a file's new content replaced what an earlier ingest stored under its name
    (a changed file, or another file of the same name): never silent."""
    if name not in store.replaced:
        return []
    return ["replaces the earlier file of this name (its chunks are gone; to keep both, rename one)"]


def _prechecked(
    candidates: list[Candidate], known: dict[str, tuple[str, str]], cfg: IngestConfig
) -> dict[int, FileReport]:
    """Reports of the candidates that need no reading, by position."""
    reports: dict[int, FileReport] = {}
    first: dict[str, Candidate] = {}
    for i, c in enumerate(candidates):
        try:
            early = _same_name(first.setdefault(c.name, c), c) or _precheck(known, c, cfg)
        except (ReaderError, OSError) as err:
            early = FileReport(c.name, "failed", problems=[str(err)])
        if early is not None:
            reports[i] = early
    return reports


def _same_name(first: Candidate, c: Candidate) -> FileReport | None:
    """A report for ``c`` when an earlier file of this ingest has its name: a project keeps one
    file per name (its row's key), so the second would replace the first, or, in one batch, break
    the batch's transaction. The same file given twice is read once."""
    if first is c:
        return None
    if _same_file(first.file, c.file):
        return FileReport(c.name, "skipped", problems=["given twice in this ingest; read once"])
    problem = (
        f"another file of this ingest has the same name ({first.file}); a project keeps one file per "
        f"name: rename one, or ingest the folder above both so that their names differ"
    )
    return FileReport(c.name, "failed", problems=[problem])


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@dataclass
class _Store:
    """What storing a batch needs besides its session."""

    project_id: int
    candidates: list[Candidate]
    cfg: IngestConfig
    index: DedupIndex
    present: set[str]  # paths that may have a file row: the project's at the start, then those stored
    replaced: frozenset[str] = frozenset()  # paths whose earlier content (chunks) a new version replaces
    pii: Counter[str] = field(default_factory=Counter)  # PII replaced in the large file just stored


def _store_batch(
    session: Session, store: _Store, batch: list[tuple[int, Prepared]]
) -> list[tuple[int, FileReport]]:
    keeps = [_keeps_earlier(store, i, p) for i, p in batch]
    out = [(i, _kept_earlier(store, i, p)) for (i, p), keep in zip(batch, keeps, strict=True) if keep]
    batch = [pair for pair, keep in zip(batch, keeps, strict=True) if not keep]
    statuses = [_file_status(p) for _, p in batch]
    named = [(store.candidates[i].name, p, st) for (i, p), st in zip(batch, statuses, strict=True)]
    file_ids = _upsert_files(session, store, named)
    pending = Pending()
    for (i, p), file_id, status in zip(batch, file_ids, statuses, strict=True):
        dropped = plan_units(
            store.project_id, file_id, (p.units, p.keys, p.sigs), store.index, store.cfg.min_chars, pending
        )
        if p.boilerplate_lines:
            dropped["header/footer lines"] = p.boilerplate_lines
        kept = len(p.units) - sum(v for k, v in dropped.items() if k != "header/footer lines")
        name = store.candidates[i].name
        notes = [*p.notes, *_replacing(store, name)]
        out.append((i, FileReport(name, status, kept, p.problems, dict(dropped), p.domain, notes)))
    insert_pending(session, store.index, pending)
    return out


def _keeps_earlier(store: _Store, i: int, p: Prepared) -> bool:
    """Whether a failed read leaves the earlier version of its file as it was: a file truncated by a
    sync conflict must not take the chunks of its last good read with it (its row keeps the old
    hash, so the next ingest reads it again)."""
    return _file_status(p) == "failed" and store.candidates[i].name in store.replaced


def _kept_earlier(store: _Store, i: int, p: Prepared) -> FileReport:
    note = "this read failed, so the earlier version of this file and its chunks are kept"
    return FileReport(store.candidates[i].name, "failed", 0, p.problems, {}, p.domain, [*p.notes, note])


def _file_status(p: Prepared) -> str:
    return "failed" if p.failed or not p.units else ("partial" if p.problems else "ingested")


def _upsert_files(session: Session, store: _Store, files: list[tuple[str, Prepared, str]]) -> list[int]:
    """Insert or update the batch's (name, prepared, status) file rows with Core statements (an ORM
    flush costs ~0.15 ms per file); a replaced file's old chunks are forgotten. Returns the ids."""
    table: Any = schema.File.__table__
    project_id, index = store.project_id, store.index
    names = [name for name, _, _ in files]
    ids: dict[str, int] = {}
    # Only paths in store.present can have a row: a first ingest needs no lookup at all.
    maybe = [name for name in names if name in store.present]
    if maybe:
        where = (table.c.project_id == project_id) & table.c.path.in_(maybe)
        # not dict(result): a Result has .keys() (its column names), so dict() would index it by them
        ids = {path: fid for path, fid in session.execute(select(table.c.path, table.c.id).where(where))}
    rows: list[dict[str, Any]] = [
        dict(path=name, stored_as=p.stored_as, sha256=p.sha256, size=p.size, status=st, problems=p.problems)
        for name, p, st in files
    ]
    conn = session.connection()
    updates = [dict(row, fid=ids[row["path"]]) for row in rows if row["path"] in ids]
    for row in updates:
        index.excluded.update(forget_file_chunks(session, row["fid"]))
    if updates:
        conn.execute(update(table).where(table.c.id == bindparam("fid")), updates)
    new = [dict(row, project_id=project_id) for row in rows if row["path"] not in ids]
    if new:
        stmt = insert(table).returning(table.c.id, sort_by_parameter_order=True)
        ids.update(zip((row["path"] for row in new), conn.execute(stmt, new).scalars(), strict=True))
        store.present.update(row["path"] for row in new)
    return [ids[name] for name in names]
