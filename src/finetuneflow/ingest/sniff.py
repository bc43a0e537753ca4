"""Decide what a file really is before a reader opens it, and refuse archives that would explode.

:func:`sniff` looks at the content first (magic bytes: PDF, zip / DOCX, binary data) and only then
at the extension, so a PDF saved as ``.txt`` is read as a PDF and a text file saved as ``.pdf``
gets a clear message instead of a parser stack trace. :func:`check_zip_bomb` reads only a zip's
central directory, so it is safe to call on any file before the DOCX reader decompresses anything.
"""

from __future__ import annotations

import codecs
import json
import zipfile
from collections.abc import Collection
from pathlib import Path

from finetuneflow.errors import ReaderError
from finetuneflow.text.clean import decode_bytes

HEAD_BYTES = 8192
"""How many leading bytes :func:`sniff` needs; pass at least this many (fewer if the file is shorter)."""

# Zip-bomb limits, from the central directory (sizes as the archive declares them).
MAX_ZIP_TOTAL_BYTES = 200 * 1024 * 1024
"""Refuse a DOCX whose members add up to more than this when uncompressed."""
MAX_ZIP_RATIO = 100
"""Refuse a member compressed more than this many times ..."""
MAX_ZIP_RATIO_MIN_BYTES = 10 * 1024 * 1024
"""... when it is also larger than this uncompressed (small XML parts compress very well)."""
MAX_ZIP_MEMBERS = 10_000
"""Refuse a DOCX with more members than this."""

_PDF_MAGIC = b"%PDF-"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # legacy Office: .doc, .xls, .ppt
_DOCX_MAIN_PART = "word/document.xml"
_HTML_OPENERS = ("<!doctype html", "<html")
_JSON_SNIFF_MAX_BYTES = 50 * 1024 * 1024  # larger unknown files are not parsed just to guess their type


def sniff(path: Path, head: bytes, known: Collection[str]) -> str:
    """The reader key for ``path``: ``".pdf"``, ``".docx"``, ``".html"``, ``".json"`` or its extension.

    ``head`` is the file's first :data:`HEAD_BYTES` bytes. Content wins over the name for PDF and
    DOCX; text whose extension is not in ``known`` (the reader registry) is recognised as
    HTML or JSON by its content. Anything else returns the lower-case extension, which the caller
    may not support.

    Raises:
        ReaderError: a zip that is not a DOCX, binary data, a legacy Office file, or a ``.pdf`` /
            ``.docx`` whose content is something else.
    """
    suffix = path.suffix.lower()
    # Some exporters put a BOM or blank lines first; "%PDF-" later in the head is just text about PDFs.
    if head.lstrip(b"\xef\xbb\xbf \t\r\n\x00").startswith(_PDF_MAGIC):
        return ".pdf"
    if head.startswith(_ZIP_MAGICS):
        return _sniff_zip(path)
    if head.startswith(_OLE_MAGIC):
        raise ReaderError(
            "this is a legacy Office file (.doc / .xls / .ppt); open it in Word or LibreOffice and save "
            "it as .docx (or export the text)"
        )
    binary = _looks_binary(head)
    if suffix in (".pdf", ".docx"):
        _wrong_container(suffix, "binary data" if binary else "text")
    if binary:
        raise ReaderError("this looks like a binary file, not text or a document; check the file type")
    if suffix in known:
        return suffix
    return _sniff_text(path, head) or suffix


def _sniff_zip(path: Path) -> str:
    """``".docx"`` for a Word package; any other zip is refused."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise ReaderError(f"damaged zip package ({exc}); re-export or re-copy the file") from exc
    if _DOCX_MAIN_PART in names:
        return ".docx"
    raise ReaderError(
        f"zip archives are not ingested (no {_DOCX_MAIN_PART}, so it is not a Word .docx); "
        "unpack it and add the files inside"
    )


def _wrong_container(suffix: str, looks_like: str) -> None:
    """Raise the 'named .pdf but is not a PDF' message for a misnamed file."""
    if suffix == ".pdf":
        raise ReaderError(
            f"named .pdf but is not a PDF (looks like {looks_like}); not a valid PDF, so re-export it "
            "from the original application or rename it to its real type"
        )
    raise ReaderError(
        f"named .docx but is not a Word document (looks like {looks_like}; it is not a zip package); "
        "if it is an old .doc or another format renamed, open it in Word or LibreOffice and save it as .docx"
    )


def _looks_binary(head: bytes) -> bool:
    """NUL bytes without a UTF-16 byte-order mark: no text encoding we read produces them."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    return b"\x00" in head


def _sniff_text(path: Path, head: bytes) -> str | None:
    """``".html"`` or ``".json"`` when text content says so, else None."""
    start = _decode_head(head).lstrip().lower()
    if start.startswith(_HTML_OPENERS):
        return ".html"
    if start.startswith(("{", "[")) and path.stat().st_size <= _JSON_SNIFF_MAX_BYTES:
        try:
            json.loads(decode_bytes(path.read_bytes())[0])
        except (json.JSONDecodeError, ReaderError):
            return None
        return ".json"
    return None


def _decode_head(head: bytes) -> str:
    """The head as text for prefix checks; a multi-byte character cut at the end is harmless."""
    try:
        return decode_bytes(head)[0]
    except ReaderError:
        return ""


def check_zip_bomb(path: Path) -> None:
    """Refuse a zip whose declared sizes would exhaust memory or disk when unpacked.

    Only the central directory is read (nothing is decompressed).

    Raises:
        ReaderError: more than :data:`MAX_ZIP_MEMBERS` members, more than
            :data:`MAX_ZIP_TOTAL_BYTES` in all, or a member over :data:`MAX_ZIP_RATIO_MIN_BYTES`
            compressed more than :data:`MAX_ZIP_RATIO` times; or the zip is damaged.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise ReaderError(f"damaged zip package ({exc}); re-export or re-copy the file") from exc
    reason = _bomb_reason(members)
    if reason:
        raise ReaderError(f"looks like a zip bomb ({reason}); refusing to unpack it")


def _bomb_reason(members: list[zipfile.ZipInfo]) -> str | None:
    """Why these zip members look like a bomb, or None."""
    if len(members) > MAX_ZIP_MEMBERS:
        return f"{len(members)} members, limit {MAX_ZIP_MEMBERS}"
    total = sum(member.file_size for member in members)
    if total > MAX_ZIP_TOTAL_BYTES:
        return f"{total / 2**20:.0f} MB uncompressed, limit {MAX_ZIP_TOTAL_BYTES / 2**20:.0f} MB"
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > MAX_ZIP_RATIO_MIN_BYTES and ratio > MAX_ZIP_RATIO:
            return f"{member.filename} expands {ratio:.0f}x to {member.file_size / 2**20:.0f} MB"
    return None
