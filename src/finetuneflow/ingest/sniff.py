"""Decide what a file really is before a reader opens it, and refuse archives that would explode.

:func:`sniff` looks at the content first (magic bytes: PDF, zip packages, binary data) and only then
at the extension, so a PDF saved as ``.txt`` is read as a PDF and a text file saved as ``.pdf``
gets a clear message instead of a parser stack trace. Zip packages are told apart by the parts they
hold (DOCX, EPUB, PPTX, XLSX); an OLE container is a legacy Office file or, when it holds an
``EncryptedPackage`` stream, a password-protected DOCX / PPTX / XLSX. :func:`check_zip_bomb` reads
only a zip's central directory, so it is safe to call on any file before a package reader
decompresses anything.
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
"""Refuse a zip package (DOCX, EPUB, PPTX, XLSX) whose members add up to more than this when uncompressed."""
MAX_ZIP_RATIO = 100
"""Refuse a member compressed more than this many times ..."""
MAX_ZIP_RATIO_MIN_BYTES = 10 * 1024 * 1024
"""... when it is also larger than this uncompressed (small XML parts compress very well)."""
MAX_ZIP_MEMBERS = 10_000
"""Refuse a zip package with more members than this."""

_PDF_MAGIC = b"%PDF-"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # legacy Office: .doc, .xls, .ppt
# Zip packages by the part that only they hold, first match wins (an EPUB also needs its mimetype).
_ZIP_KINDS = (
    ("word/document.xml", ".docx"),
    ("ppt/presentation.xml", ".pptx"),
    ("xl/workbook.xml", ".xlsx"),
    ("META-INF/container.xml", ".epub"),
)
_EPUB_MIMETYPE = b"application/epub+zip"
# What a file named with one of these extensions must be, for the "named .x but is not" message.
_CONTAINERS = {
    ".pdf": "a PDF",
    ".docx": "a Word document",
    ".epub": "an EPUB e-book",
    ".pptx": "a PowerPoint presentation",
    ".xlsx": "an Excel workbook",
}
_APPS = {".docx": "Word", ".pptx": "PowerPoint", ".xlsx": "Excel"}
# An encrypted OOXML file is an OLE container whose directory names this stream (UTF-16LE, 128-byte
# aligned entries, name length in bytes with its NUL at offset 64).
_ENCRYPTED_STREAM = "EncryptedPackage".encode("utf-16-le")
_OLE_ENTRY = 128
_OLE_SCAN_BLOCK = 1 << 20
_HTML_OPENERS = ("<!doctype html", "<html")
_JSON_SNIFF_MAX_BYTES = 50 * 1024 * 1024  # larger unknown files are not parsed just to guess their type


def sniff(path: Path, head: bytes, known: Collection[str]) -> str:
    """The reader key for ``path``: ``".pdf"``, a zip package's type (``".docx"``, ``".epub"``,
    ``".pptx"``, ``".xlsx"``), ``".html"``, ``".json"`` or its extension.

    ``head`` is the file's first :data:`HEAD_BYTES` bytes. Content wins over the name for PDF and
    zip packages; text whose extension is not in ``known`` (the reader registry) is recognised as
    HTML or JSON by its content. Anything else returns the lower-case extension, which the caller
    may not support.

    Raises:
        ReaderError: a zip that is no package we read, binary data, a legacy or password-protected
            Office file, or a ``.pdf`` / ``.docx`` / ``.epub`` / ``.pptx`` / ``.xlsx`` whose content
            is something else.
    """
    suffix = path.suffix.lower()
    # Some exporters put a BOM or blank lines first; "%PDF-" later in the head is just text about PDFs.
    if head.lstrip(b"\xef\xbb\xbf \t\r\n\x00").startswith(_PDF_MAGIC):
        return ".pdf"
    if head.startswith(_ZIP_MAGICS):
        return _sniff_zip(path)
    if head.startswith(_OLE_MAGIC):
        _refuse_ole(path, suffix)
    binary = looks_binary(head)
    if suffix in _CONTAINERS:
        _wrong_container(suffix, "binary data" if binary else "text")
    if binary:
        raise ReaderError("this looks like a binary file, not text or a document; check the file type")
    if suffix in known:
        return suffix
    found = _sniff_text(path, head)
    if found or suffix or path.name.startswith("."):  # a dotfile (.env) is not read as text by chance
        return found or suffix
    return extensionless(path.name, head)


# Files a project names without an extension: read as the type their name means.
_NAMED = {
    **dict.fromkeys(("makefile", "gnumakefile"), ".mk"),
    **dict.fromkeys(("dockerfile", "containerfile"), ".dockerfile"),
    **dict.fromkeys(("gemfile", "rakefile", "vagrantfile", "podfile", "brewfile"), ".rb"),
}
# A script's interpreter (its ``#!`` line, ``env`` skipped) -> the extension its language has.
_SHEBANGS = {"python": ".py", "sh": ".sh", "bash": ".sh", "zsh": ".sh", "dash": ".sh", "ksh": ".sh",
             "node": ".js", "ruby": ".rb"}  # fmt: skip


def extensionless(name: str, head: bytes) -> str:
    """The reader key of a text file without an extension (LICENSE, Makefile, a script in
    ``bin/``): a build file by its name, a script by its ``#!`` interpreter, else plain text."""
    named = _NAMED.get(name.lower())
    if named:
        return named
    first = head.split(b"\n", 1)[0]
    if first.startswith(b"#!"):
        words = first[2:].decode("utf-8", "replace").split()
        program = words[1] if words and words[0].endswith("/env") and len(words) > 1 else (words or [""])[0]
        interpreter = program.rsplit("/", 1)[-1].rstrip("0123456789.")
        return _SHEBANGS.get(interpreter, ".txt")
    return ".txt"


def _sniff_zip(path: Path) -> str:
    """The package type of a zip (DOCX, PPTX, XLSX, EPUB) from the parts it holds; any other zip is
    refused. Only the central directory and an EPUB's tiny ``mimetype`` member are read."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            for part, kind in _ZIP_KINDS:
                if part in names and (kind != ".epub" or _epub_mimetype(archive, names)):
                    return kind
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise ReaderError(f"damaged zip package ({exc}); re-export or re-copy the file") from exc
    raise ReaderError(
        "zip archives are not ingested (no word/document.xml, ppt/presentation.xml, xl/workbook.xml or "
        "META-INF/container.xml, so it is not a Word .docx, PowerPoint .pptx, Excel .xlsx or EPUB "
        "e-book); unpack it and add the files inside"
    )


def _epub_mimetype(archive: zipfile.ZipFile, names: set[str]) -> bool:
    """True unless the zip's ``mimetype`` member names something other than EPUB (some tools omit it)."""
    if "mimetype" not in names:
        return True
    info = archive.getinfo("mimetype")
    if info.file_size > 256:  # a few bytes by the spec; never decompress a big one to compare it
        return False
    return archive.read(info).strip() == _EPUB_MIMETYPE


def _refuse_ole(path: Path, suffix: str) -> None:
    """Raise the message for an OLE container: password-protected DOCX / PPTX / XLSX, or legacy Office."""
    if _ole_holds_encrypted_package(path):
        kind = f"this {suffix} file" if suffix in _APPS else "this Office file"
        app = _APPS.get(suffix, "Word, PowerPoint, Excel")
        raise ReaderError(
            f"{kind} is encrypted (password-protected); open it in {app} or LibreOffice, save a copy "
            "without a password, and add that instead"
        )
    raise ReaderError(
        "this is a legacy Office file (.doc / .xls / .ppt); open it in Word, PowerPoint, Excel or "
        "LibreOffice and save it as .docx / .pptx / .xlsx (or export the text)"
    )


def _ole_holds_encrypted_package(path: Path) -> bool:
    """True when an OLE directory entry is named ``EncryptedPackage`` (what Office writes when a
    DOCX / PPTX / XLSX is saved with a password). Scans the file in blocks: the directory sectors
    can sit anywhere, and following the FAT chain would need a parser for one yes/no question."""
    overlap = len(_ENCRYPTED_STREAM) + 2 * _OLE_ENTRY
    offset = 0  # file offset of block[0]
    block = b""
    with path.open("rb") as handle:
        while data := handle.read(_OLE_SCAN_BLOCK):
            block += data
            at = block.find(_ENCRYPTED_STREAM)
            while at >= 0:
                entry = offset + at
                length = block[at + 64 : at + 66]
                if entry % _OLE_ENTRY == 0 and length == (len(_ENCRYPTED_STREAM) + 2).to_bytes(2, "little"):
                    return True
                at = block.find(_ENCRYPTED_STREAM, at + 1)
            keep = min(len(block), overlap)
            offset += len(block) - keep
            block = block[-keep:]
    return False


def _wrong_container(suffix: str, looks_like: str) -> None:
    """Raise the 'named .pdf but is not a PDF' message for a misnamed file."""
    if suffix == ".pdf":
        raise ReaderError(
            f"named .pdf but is not a PDF (looks like {looks_like}); not a valid PDF, so re-export it "
            "from the original application or rename it to its real type"
        )
    if suffix == ".epub":
        raise ReaderError(
            f"named .epub but is not an EPUB e-book (looks like {looks_like}; it is not a zip package); "
            "re-export it from the original application or rename it to its real type"
        )
    app = _APPS[suffix]
    raise ReaderError(
        f"named {suffix} but is not {_CONTAINERS[suffix]} (looks like {looks_like}; it is not a zip "
        f"package); if it is an old format renamed, open it in {app} or LibreOffice and save it as {suffix}"
    )


def plain_binary(head: bytes) -> bool:
    """Binary data that no reader takes by its content (not a PDF, a zip package or an Office
    file): a program or a data file."""
    documents = head.lstrip(b"\xef\xbb\xbf \t\r\n\x00").startswith(_PDF_MAGIC)
    return looks_binary(head) and not documents and not head.startswith((*_ZIP_MAGICS, _OLE_MAGIC))


def looks_binary(head: bytes) -> bool:
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
