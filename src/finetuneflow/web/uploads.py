"""Uploads into a project's ``raw/uploads/``: a multipart body streamed to disk under ``raw/``
(never into memory, never into the system temp folder), each file's size capped while it arrives,
its type sniffed from the content by ingest's own sniffer (a name or a Content-Type is a claim, not
a fact), zip packages checked for bombs before anything opens them, and its name made safe.

Nothing is written outside ``raw/``: parts land in ``raw/.incoming/`` under random names, and a
checked file is linked into ``raw/uploads/`` under its safe name (a link fails rather than replace
an existing file, so a collision takes the next suffix), its resolved path checked to be there.

An upload never fills the disk the state database lives on: the declared body must fit in the free
space less :data:`DISK_RESERVE_BYTES`, and the free space is looked at again every
:data:`CHECK_EVERY_BYTES` while the body arrives (a client may declare no length, or lie)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from finetuneflow import paths
from finetuneflow.errors import ReaderError
from finetuneflow.ingest.readers import READERS
from finetuneflow.ingest.sniff import HEAD_BYTES, MAX_ZIP_TOTAL_BYTES, check_zip_bomb, sniff
from finetuneflow.web.errors import ApiError

UPLOADS = "uploads"
INCOMING = ".incoming"
STALE_PART_S = 3600.0  # a part untouched this long was left by a server killed mid-upload
MAX_NAME_BYTES = 200
MAX_FILES = 100  # per request
# left free by every upload: SQLite's journal, running jobs' checkpoints and logs need room to
# write, and a full disk fails them mid-write (a training run loses the step it was saving)
DISK_RESERVE_BYTES = 512 * 2**20
CHECK_EVERY_BYTES = 8 * 2**20  # how much of a body arrives between two looks at the free space
_UNSAFE = re.compile(r"[^\w.\- ()+,@]")  # \w is unicode-aware: letters of any script stay
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def uploads_dir(project: str) -> Path:
    """The project's ``raw/uploads/`` (created): what ``POST .../ingest`` reads."""
    folder = paths.project_dir(project) / "raw" / UPLOADS
    folder.mkdir(exist_ok=True)
    return folder


def safe_name(given: str) -> str:
    """A file name that can only mean one file in one folder: no path parts (either separator),
    unicode NFKC-normalised (a fullwidth slash is a slash), no control characters, no hidden
    (dot) files, at most :data:`MAX_NAME_BYTES` bytes; odd characters become ``_``.

    Raises:
        ApiError: 400 for a name with control characters (NUL included), a hidden file, or nothing left.
    """
    name = unicodedata.normalize("NFKC", given)
    if _CONTROL.search(name):
        raise ApiError(400, "the file name holds control characters (NUL, newline, ...); rename the file",
                       "bad_file_name")  # fmt: skip
    name = re.split(r"[/\\]", name)[-1].strip()
    if name.startswith("."):
        raise ApiError(400, f"hidden files (names starting with '.') are not accepted: {name[:60]!r}",
                       "bad_file_name")  # fmt: skip
    name = _UNSAFE.sub("_", name)
    stem, suffix = os.path.splitext(name)
    while len(name.encode()) > MAX_NAME_BYTES:
        stem = stem[:-1]
        name = stem + suffix[:20]
    if not stem.strip("_ "):
        raise ApiError(400, f"the file name {given[:60]!r} has no usable characters", "bad_file_name")
    return name


@dataclass
class _Part:
    """One file part as it arrives: its name as sent and where its bytes go."""

    sent_name: str
    path: Path
    size: int = 0
    handle: Any = None


@dataclass
class _Form:
    """State of one streamed multipart body."""

    incoming: Path
    limit: int
    parts: list[_Part] = field(default_factory=list)
    header: tuple[bytearray, bytearray] = field(default_factory=lambda: (bytearray(), bytearray()))
    headers: dict[str, bytes] = field(default_factory=dict)
    current: _Part | None = None
    unchecked: int = 0  # bytes written since the free space was last looked at
    looked: bool = False  # whether it was looked at since the body began

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._begin, "on_header_field": self._field, "on_header_value": self._value,
            "on_header_end": self._header_end, "on_headers_finished": self._open,
            "on_part_data": self._data, "on_part_end": self._close,
        }  # fmt: skip

    def _begin(self) -> None:
        self.headers, self.current = {}, None

    def _field(self, data: bytes, start: int, end: int) -> None:
        self.header[0].extend(data[start:end])

    def _value(self, data: bytes, start: int, end: int) -> None:
        self.header[1].extend(data[start:end])

    def _header_end(self) -> None:
        self.headers[bytes(self.header[0]).decode("latin-1").lower()] = bytes(self.header[1])
        self.header[0].clear()
        self.header[1].clear()

    def _open(self) -> None:
        _, options = parse_options_header(self.headers.get("content-disposition", b""))
        if b"filename" not in options:
            return  # a plain form field: ignored
        if len(self.parts) >= MAX_FILES:
            raise ApiError(400, f"at most {MAX_FILES} files per upload request", "too_many_files")
        name = options[b"filename"].decode("utf-8", "replace")
        self.current = _Part(name, self.incoming / f"{secrets.token_hex(8)}.part")
        self.current.handle = self.current.path.open("xb")
        self.parts.append(self.current)

    def _data(self, data: bytes, start: int, end: int) -> None:
        part = self.current
        if part is None:
            return
        part.size += end - start
        if part.size > self.limit:
            limit = f"{self.limit / 2**20:g} MB"
            message = f"{part.sent_name[:80]!r} is over the upload limit of {limit} (setting max_upload_mb)"
            raise ApiError(413, message, "upload_too_large")
        self.unchecked += end - start
        if self.unchecked >= CHECK_EVERY_BYTES or not self.looked:
            # room for this piece and for what may arrive before the next look
            check_room(self.incoming, end - start + CHECK_EVERY_BYTES)
            self.unchecked, self.looked = 0, True
        part.handle.write(data[start:end])

    def _close(self) -> None:
        if self.current is not None:
            self.current.handle.close()
            self.current = None

    def discard(self) -> None:
        for part in self.parts:
            if part.handle is not None:
                part.handle.close()
            part.path.unlink(missing_ok=True)


def parser(project: str, content_type: str, limit: int, declared: int = 0) -> tuple[MultipartParser, _Form]:
    """A streaming parser for one upload body (of ``declared`` bytes, 0 when not said) and the form
    state it fills.

    Raises:
        ApiError: 415 when the body is not multipart/form-data with a boundary; 507 when the body
            would not leave :data:`DISK_RESERVE_BYTES` free.
    """
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data" or b"boundary" not in options:
        raise ApiError(
            415, "send the files as multipart/form-data (a 'files' field per file)", "not_multipart"
        )
    incoming = paths.project_dir(project) / "raw" / INCOMING
    incoming.mkdir(exist_ok=True)
    _sweep(incoming)
    check_room(incoming, declared)
    form = _Form(incoming, limit)
    return MultipartParser(options[b"boundary"], form.callbacks()), form  # type: ignore[arg-type]


def check_room(folder: Path, wanted: int) -> None:
    """Refuse ``wanted`` more bytes in ``folder`` unless :data:`DISK_RESERVE_BYTES` stay free.

    Raises:
        ApiError: 507, saying how much is free and what to do.
    """
    free = shutil.disk_usage(folder).free
    if free - wanted >= DISK_RESERVE_BYTES:
        return
    reserve = DISK_RESERVE_BYTES // 2**20
    message = (
        f"not enough free disk space: {free / 2**20:,.0f} MB free where the projects are kept, the "
        f"upload needs {wanted / 2**20:,.0f} MB more and {reserve} MB stay free for the database and "
        "running jobs; delete old runs or projects and upload again"
    )
    raise ApiError(507, message, "insufficient_storage")


def _sweep(incoming: Path) -> None:
    """Remove the parts that uploads cut off by a killed server left (a request removes its own
    parts however it ends, but only while its process lives); a live upload writes on, so only
    parts untouched for ``STALE_PART_S`` go."""
    cutoff = time.time() - STALE_PART_S
    for part in incoming.glob("*.part"):
        try:
            if part.stat().st_mtime < cutoff:
                part.unlink()
        except OSError:  # gone meanwhile, or not ours to remove: the next upload tries again
            continue


def store(project: str, form: _Form) -> list[dict[str, Any]]:
    """Check every received file and move it into ``raw/uploads/``; all or none (on an error the
    ones already placed stay, which a retry sees as collisions; the rest are removed).

    Raises:
        ApiError: 400 no file; 413 a zip bomb; 415 a type ingest cannot read (or disguised).
    """
    try:
        if not form.parts:
            raise ApiError(400, "no file in the upload (send each as a 'files' form field with a file name)",
                           "no_file")  # fmt: skip
        checked = [(part, safe_name(part.sent_name), _kind(part)) for part in form.parts]
        return [_place(project, part, name, kind) for part, name, kind in checked]
    finally:
        form.discard()


def _kind(part: _Part) -> str:
    """The reader key of the file's content (ingest's sniffer), refusing zip bombs first."""
    name = part.sent_name[:80]
    if part.size == 0:
        raise ApiError(400, f"{name!r} is empty (0 bytes)", "empty_file")
    with part.path.open("rb") as fh:
        head = fh.read(HEAD_BYTES)
    try:
        if head.startswith(b"PK"):
            check_zip_bomb(part.path)
        kind = sniff(Path(safe_name(part.sent_name)), head, READERS)
    except ReaderError as err:
        if "zip bomb" in str(err):
            raise ApiError(413, f"{name!r}: {err} (limit: {MAX_ZIP_TOTAL_BYTES // 2**20} MB unpacked in all, "
                           "ingest.sniff.MAX_ZIP_TOTAL_BYTES)", "zip_bomb") from None  # fmt: skip
        raise ApiError(415, f"{name!r}: {err}", "unsupported_type") from None
    if kind not in READERS:
        known = ", ".join(sorted(k for k in READERS if len(k) <= 6))
        raise ApiError(415, f"{name!r}: {kind or 'this'} files are not ingested; known types: {known}",
                       "unsupported_type")  # fmt: skip
    return kind


def _place(project: str, part: _Part, name: str, kind: str) -> dict[str, Any]:
    """Link the checked part into ``raw/uploads/`` under ``name`` (its suffix the sniffed kind),
    the first free of ``name``, ``name-2``, ... ; the part file itself is removed by the caller."""
    folder = uploads_dir(project).resolve()
    stem, suffix = os.path.splitext(name)
    if suffix.lower() != kind:  # content wins: a PDF named .txt is stored (and read) as a .pdf
        suffix = kind
    for n in range(1, 10_000):
        candidate = folder / (f"{stem}{suffix}" if n == 1 else f"{stem}-{n}{suffix}")
        if candidate.resolve().parent != folder:  # cannot happen with a safe name; never trust it
            raise ApiError(400, "the file name resolves outside the project's raw/uploads", "bad_file_name")
        try:
            os.link(part.path, candidate)  # never replaces an existing file
        except FileExistsError:
            continue
        renamed = None if candidate.name == part.sent_name else part.sent_name
        return {"name": candidate.name, "size": part.size, "kind": kind, "renamed_from": renamed}
    raise ApiError(409, f"too many files named like {name!r}", "name_collision")


def list_uploads(project: str) -> list[dict[str, Any]]:
    """The files in the project's ``raw/uploads/``, by name."""
    out = []
    for path in sorted(uploads_dir(project).iterdir()):
        if path.is_file() and not path.is_symlink():
            kind = path.suffix.lower()
            out.append({"name": path.name, "size": path.stat().st_size, "kind": kind, "renamed_from": None})
    return out
