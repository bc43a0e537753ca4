"""Read source files into :class:`SourceRecord` lists, one reader per file type.

Add a format by writing a ``Reader`` and registering it in :data:`READERS`; :func:`read_file`
dispatches on the type :func:`~finetuneflow.ingest.sniff.sniff` finds (magic bytes first, then
the lower-case extension). Bad content raises :class:`ReaderError` (whole file unusable) or is
listed in :attr:`ReadResult.problems` (one row or line unusable, the rest kept).
"""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetuneflow.errors import ReaderError
from finetuneflow.ingest import json_shapes
from finetuneflow.ingest.code import LANGUAGES, code_records
from finetuneflow.ingest.delimited import delimited_items
from finetuneflow.ingest.docx import docx_blocks
from finetuneflow.ingest.epub import epub_records
from finetuneflow.ingest.html import html_record
from finetuneflow.ingest.json_object import WRAPPER_KEYS
from finetuneflow.ingest.json_shapes import QA_COLUMNS
from finetuneflow.ingest.limits import current, past_the_stack, too_deep, too_long
from finetuneflow.ingest.ocr import ScannedPages, is_scanned
from finetuneflow.ingest.pptx import pptx_records
from finetuneflow.ingest.sniff import HEAD_BYTES, check_zip_bomb, extensionless, sniff
from finetuneflow.ingest.xlsx import xlsx_records
from finetuneflow.records import SourceRecord
from finetuneflow.text.clean import clean_text, decode_bytes

__all__ = ["QA_COLUMNS", "READERS", "SUPPORTED_EXTENSIONS", "ReadResult", "Reader", "read_file"]


@dataclass
class ReadResult:
    """What a reader got out of one file."""

    records: list[SourceRecord]
    """The usable records, in file order."""
    problems: list[str] = field(default_factory=list)
    """One line per skipped row / line / item, e.g. ``"row 7: empty answer"``."""
    notes: list[str] = field(default_factory=list)
    """What the reader did that a person should know but that lost nothing, e.g. which PDF pages
    were read by OCR and how sure it was."""


Reader = Callable[[Path], ReadResult]

_MAX_LISTED_PROBLEMS = 5


def read_file(path: Path) -> ReadResult:
    """Read one source file with the reader registered for its sniffed type.

    The type comes from the content where it is unambiguous (a PDF named ``.txt`` is read as a
    PDF; a zip holding ``word/document.xml`` as DOCX, ``ppt/presentation.xml`` as PPTX,
    ``xl/workbook.xml`` as XLSX, an EPUB container as EPUB; HTML or JSON with an unknown extension
    by its text), otherwise from the extension.

    Raises:
        ReaderError: missing / empty / unreadable file, unsupported type, binary data, a zip that is
            not a DOCX / EPUB / PPTX / XLSX (or is a zip bomb), a password-protected Office file, a
            ``.pdf`` / ``.docx`` / ``.epub`` / ``.pptx`` / ``.xlsx`` whose content is something else,
            or content the reader cannot use at all; the message starts with the file name and says
            what to do.
    """
    try:
        if not path.is_file():
            raise ReaderError("file not found (or it is a folder); check the path")
        if path.stat().st_size == 0:
            raise ReaderError("the file is empty (0 bytes); re-export or re-copy it")
        with path.open("rb") as handle:
            kind = sniff(path, handle.read(HEAD_BYTES), READERS)
        reader = READERS.get(kind)
        if reader is None:
            raise ReaderError(_unsupported(path.suffix))
        size = path.stat().st_size
        if kind not in STREAMED and size > current().max_record:
            raise ReaderError(too_long(f"a {kind} file (read whole)", size))
        return reader(path)
    except ReaderError as exc:
        raise ReaderError(f"{path.name}: {exc}") from exc
    except RecursionError:  # a shape deeper than Python's stack, under a raised max_depth
        raise ReaderError(f"{path.name}: {past_the_stack()}") from None
    except OSError as exc:
        raise ReaderError(
            f"{path.name}: cannot read the file ({exc.strerror or exc}); "
            "check that you have permission to read it"
        ) from exc


def _unsupported(suffix: str) -> str:
    """The 'unsupported file type' message: document types first, then source code extensions."""
    documents = ", ".join(ext for ext in SUPPORTED_EXTENSIONS if ext not in LANGUAGES)
    code = ", ".join(ext for ext in SUPPORTED_EXTENSIONS if ext in LANGUAGES)
    return (
        f"unsupported file type '{suffix or '(no extension)'}'; supported: {documents}; source code: {code}"
    )


# --- plain text -----------------------------------------------------------------------------


def _read_text(path: Path) -> ReadResult:
    """TXT / Markdown: the whole file as one ``text`` record (Markdown headings kept as context)."""
    text, encoding = decode_bytes(path.read_bytes())
    cleaned = clean_text(text)
    if not cleaned:
        raise ReaderError("the file contains only whitespace; nothing to learn from")
    return ReadResult([SourceRecord("text", cleaned, meta={"encoding": encoding})])


# --- PDF ------------------------------------------------------------------------------------


def _read_pdf(path: Path) -> ReadResult:
    """PDF: one ``text`` record per page that has extractable text, ``page`` 1-based; a scanned page
    (no text layer, only images) is read by OCR when the ``ocr`` extra is installed."""
    from pypdf import PdfReader

    try:
        pdf = PdfReader(path)
        encrypted = pdf.is_encrypted
    except OSError:
        raise  # read_file turns it into a permissions message
    except Exception as exc:  # pypdf raises many types for damaged files
        raise ReaderError(
            f"not a valid PDF or the file is damaged ({exc}); re-export it from the original application"
        ) from exc
    if encrypted:
        _unlock_pdf(pdf)
    records: list[SourceRecord] = []
    problems: list[str] = []
    try:
        pages = list(pdf.pages)
    except Exception as exc:
        raise ReaderError(f"the PDF is damaged: its page list cannot be read ({exc})") from exc
    scans = ScannedPages(path)
    for number, page in enumerate(pages, start=1):
        try:
            text = clean_text(page.extract_text() or "")
        except Exception as exc:
            problems.append(f"page {number}: text extraction failed ({exc})")
            continue
        if text:
            records.append(SourceRecord("text", text, page=number))
        elif is_scanned(page) and (scanned := scans.record(number)):
            records.append(scanned)  # no text layer, only a picture of one: read by OCR
    problems += scans.problems()
    if not records:
        reason = "; ".join(problems) or "no text layer and no scanned page images that OCR could read"
        raise ReaderError(f"no extractable text ({reason})")
    return ReadResult(records, problems, scans.notes())


def _unlock_pdf(pdf: Any) -> None:
    """Open an encrypted PDF that has an empty user password (permissions-only protection).

    Raises:
        ReaderError: a password is needed to open it.
    """
    try:
        unlocked = bool(pdf.decrypt(""))
    except Exception:  # unsupported cipher, missing crypto backend, damaged encryption dictionary
        unlocked = False
    if not unlocked:
        raise ReaderError(
            "the PDF is password-protected; save an unprotected copy (e.g. open it and print to PDF) "
            "and add that instead"
        )


# --- DOCX -----------------------------------------------------------------------------------


def _read_docx(path: Path) -> ReadResult:
    """DOCX: paragraphs and tables in document order as one ``text`` record; headings get '#'.

    The zip's directory is checked for zip-bomb sizes before anything is unpacked.
    """
    check_zip_bomb(path)
    text = clean_text("\n\n".join(docx_blocks(path)))
    if not text:
        raise ReaderError("the document contains no text")
    return ReadResult([SourceRecord("text", text)])


# --- CSV / TSV ------------------------------------------------------------------------------


def _read_delimited(path: Path) -> ReadResult:
    """CSV/TSV: Q&A columns give ``qa`` records, any other table gives one ``text`` record per row."""
    text, _ = decode_bytes(path.read_bytes())
    default = "\t" if path.suffix.lower() == ".tsv" else ","
    result = ReadResult([])
    for item in delimited_items(io.StringIO(text, newline=""), default):
        if isinstance(item, str):
            result.problems.append(item)
        else:
            result.records.append(item)
    return non_empty(result, "rows")


# --- JSON / JSONL ---------------------------------------------------------------------------


def _read_json(path: Path) -> ReadResult:
    """JSON: one example, a list of examples, a wrapper object with a list, facts, or any document as text.

    Several JSON values one per line are read as JSONL; a document followed by anything else is
    read and the rest reported as a problem.
    """
    text, _ = decode_bytes(path.read_bytes())
    try:
        document = parse_json(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            return _read_json_with_extra_data(text, exc)
        raise ReaderError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; fix it there or validate "
            "the file with a JSON linter"
        ) from exc
    return non_empty(_from_document(document), "examples")


def _read_json_with_extra_data(text: str, exc: json.JSONDecodeError) -> ReadResult:
    """A JSONL file named .json, or one JSON document with trailing data (``exc.pos`` is where it starts)."""
    if "\n" not in text[: exc.pos].strip():  # the first value fits on its first line: maybe JSONL
        lines = _jsonl_result(text)
        if len(lines.records) > 1 or not lines.problems:
            return non_empty(lines, "lines")
    result = _from_document(parse_json(text[: exc.pos]))
    result.problems.append(
        f"trailing data after JSON document at line {exc.lineno} column {exc.colno} ignored"
    )
    return non_empty(result, "examples")


# A JSON string (escapes included) or a bracket; the unrolled form scans long strings fast.
_JSON_NESTING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def parse_json(text: str) -> Any:
    """``json.loads`` after checking the nesting depth against the current ``max_depth``.

    Raises:
        ReaderError: nested deeper than ``max_depth`` (named, with the flag that raises it).
        json.JSONDecodeError: not valid JSON.
    """
    limit = current().max_depth
    if text.count("[") + text.count("{") > limit:  # cheap: most documents cannot be that deep
        depth = 0
        for match in _JSON_NESTING.finditer(text):
            char = match.group()
            if char in "[{":
                depth += 1
                if depth > limit:
                    raise ReaderError(too_deep(depth))
            elif char in "]}":
                depth -= 1
    try:
        return json.loads(text)
    except RecursionError:  # deeper than Python's own stack, below a raised max_depth
        raise ReaderError(past_the_stack()) from None
    except json.JSONDecodeError:
        raise
    except ValueError:  # an integer past Python's digit limit (a long id): kept, as its text
        return json.loads(text, parse_int=_long_int)


def _long_int(digits: str) -> int | str:
    """An integer, or its digits as text where it has more than ``int()`` converts."""
    return digits if len(digits.lstrip("-")) > sys.get_int_max_str_digits() else int(digits)


def _read_jsonl(path: Path) -> ReadResult:
    """JSONL: one example (or text object) per line; bad lines are problems, good lines are kept."""
    text, _ = decode_bytes(path.read_bytes())
    return non_empty(_jsonl_result(text), "lines")


def _jsonl_result(text: str) -> ReadResult:
    """Parse JSON lines text; see :func:`_read_jsonl`."""
    result = ReadResult([])
    # "\n" only: str.splitlines() also breaks at U+2028, U+2029 and U+0085, which JSON allows raw
    # inside a string (json.dumps(ensure_ascii=False) writes them so), cutting good records in two
    lines = (line.removesuffix("\r") for line in text.split("\n"))
    for item in jsonl_records(enumerate(lines, start=1)):
        if isinstance(item, str):
            result.problems.append(item)
        else:
            result.records.append(item)
    return result


def jsonl_records(lines: Iterable[tuple[int, str | None]]) -> Iterator[SourceRecord | str]:
    """The record of each (number, line) of JSON lines, or a problem line; a line given as None
    was longer than ``max_record_mb``."""
    for number, raw in lines:
        if raw is None:
            yield f"line {number}: {too_long('the line', current().max_record + 1)}"
            continue
        if not raw.strip():
            continue
        try:
            value = parse_json(raw)
        except json.JSONDecodeError as exc:
            yield f"line {number}: invalid JSON: {exc.msg} (column {exc.colno})"
            continue
        except ReaderError as exc:
            yield f"line {number}: {exc}"
            continue
        record = json_shapes.example(value, number)
        if record is None:
            record = json_shapes.text_record(value, number) or "no text in this line"
        yield f"line {number}: {record}" if isinstance(record, str) else record


def _from_document(document: Any) -> ReadResult:
    """Records from a parsed JSON document of any supported shape.

    ``{"conversations": [...], "facts": [...]}`` gives the conversations' records, then one
    ``text`` record per fact.
    """
    facts = document.get("facts") if isinstance(document, dict) else None
    if not isinstance(facts, list):
        return _examples(document)
    rest = {key: value for key, value in document.items() if key != "facts"}
    result = _examples(rest) if rest else ReadResult([])
    records, problems = json_shapes.fact_records(facts)
    return ReadResult(result.records + records, result.problems + problems)


def _examples(document: Any) -> ReadResult:
    """Records from a single example, a list / wrapper of examples, or the document as text."""
    single = json_shapes.example(document, None)
    if isinstance(single, SourceRecord):
        return ReadResult([single])
    if isinstance(single, str):
        return ReadResult([], [f"the example: {single}"])
    items = _example_list(document)
    results = [(number, json_shapes.example(item, None)) for number, item in enumerate(items or [], start=1)]
    if not any(record is not None for _, record in results):
        text = json_shapes.text_record(document, None)  # not chat data: keep it as a document
        return ReadResult([text] if text else [])
    result = ReadResult([])
    for number, record in results:
        if isinstance(record, SourceRecord):
            result.records.append(record)
        else:
            reason = record or "not a chat or Q&A example (needs 'messages', 'conversations' or Q&A keys)"
            result.problems.append(f"item {number}: {reason}")
    return result


def _example_list(document: Any) -> list[Any] | None:
    """The list of examples in a top-level list or under a wrapper key, else None."""
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        for key in WRAPPER_KEYS:
            if isinstance(document.get(key), list):
                return list(document[key])
    return None


def non_empty(result: ReadResult, unit: str) -> ReadResult:
    """``result`` unchanged if it has records.

    Raises:
        ReaderError: no usable records; lists the first problems so the user can fix them.
    """
    if result.records:
        return result
    if not result.problems:
        raise ReaderError(f"no usable {unit} found; the file contains no text")
    shown = "; ".join(result.problems[:_MAX_LISTED_PROBLEMS])
    more = len(result.problems) - _MAX_LISTED_PROBLEMS
    suffix = f"; and {more} more" if more > 0 else ""
    raise ReaderError(f"no usable {unit}: {shown}{suffix}")


# --- EPUB, PPTX, XLSX: generators of records and problem lines -------------------------------


def _gathered(records: Callable[[Path], Iterator[SourceRecord | str]], unit: str) -> Reader:
    """A :data:`Reader` over a generator that yields records and problem lines (strings)."""

    def read(path: Path) -> ReadResult:
        result = ReadResult([])
        for item in records(path):
            if isinstance(item, str):
                result.problems.append(item)
            else:
                result.records.append(item)
        return non_empty(result, unit)

    read.__doc__ = records.__doc__
    return read


# --- HTML and source code --------------------------------------------------------------------


def _read_html(path: Path) -> ReadResult:
    """HTML: the page's main text (no navigation, scripts or footers) as one ``text`` record."""
    text, encoding = decode_bytes(path.read_bytes())
    record = html_record(text)
    record.meta["encoding"] = encoding
    return ReadResult([record])


def _read_code(path: Path) -> ReadResult:
    """Source code: the whole file as ``text``; Python also gives Q&A pairs of documented functions."""
    data = path.read_bytes()
    text, _ = decode_bytes(data)
    return ReadResult(code_records(text, path.suffix.lower() or extensionless(path.name, data[:HEAD_BYTES])))


READERS: dict[str, Reader] = {
    ".txt": _read_text,
    ".md": _read_text,
    ".markdown": _read_text,
    ".rst": _read_text,  # reStructuredText and AsciiDoc: prose with light markup, kept as written
    ".adoc": _read_text,
    ".pdf": _read_pdf,
    ".docx": _read_docx,
    ".epub": _gathered(epub_records, "chapters"),
    ".pptx": _gathered(pptx_records, "slides"),
    ".xlsx": _gathered(xlsx_records, "rows"),
    ".csv": _read_delimited,
    ".tsv": _read_delimited,
    ".json": _read_json,
    ".jsonl": _read_jsonl,
    ".html": _read_html,
    ".htm": _read_html,
    ".xhtml": _read_html,
    **{suffix: _read_code for suffix in LANGUAGES},
}
"""Reader per file type: the lower-case extension, or the type :func:`sniff` found in the content."""

SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(sorted(READERS))

TEXT_KINDS = frozenset((".txt", ".md", ".markdown", ".rst", ".adoc"))
STREAMED = TEXT_KINDS | {".json", ".jsonl", ".csv", ".tsv"}
"""Types whose large files are read in pieces (see ``ingest.stream``); the others are read whole."""
