"""Read source files into :class:`SourceRecord` lists, one reader per file extension.

Add a format by writing a ``Reader`` and registering it in :data:`READERS`; :func:`read_file`
dispatches on the lower-case extension. Bad content raises :class:`ReaderError` (whole file
unusable) or is listed in :attr:`ReadResult.problems` (one row or line unusable, the rest kept).
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetuneflow.ingest.clean import clean_message, clean_text, decode_bytes
from finetuneflow.records import Message, ReaderError, SourceRecord


@dataclass
class ReadResult:
    """What a reader got out of one file."""

    records: list[SourceRecord]
    """The usable records, in file order."""
    problems: list[str] = field(default_factory=list)
    """One line per skipped row / line / item, e.g. ``"row 7: empty answer"``."""


Reader = Callable[[Path], ReadResult]

# (question column, answer column) pairs we recognise, compared case-insensitively.
QA_COLUMNS: tuple[tuple[str, str], ...] = (
    ("question", "answer"),
    ("prompt", "response"),
    ("instruction", "output"),
    ("q", "a"),
)
_ROLE_NAMES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "model": "assistant",
}
_WRAPPER_KEYS = ("conversations", "data", "examples", "items")
_MAX_LISTED_PROBLEMS = 5


def read_file(path: Path) -> ReadResult:
    """Read one source file with the reader registered for its extension.

    Raises:
        ReaderError: unsupported extension, missing / empty / unreadable file, or content the
            reader cannot use at all; the message starts with the file name and says what to do.
    """
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise ReaderError(
            f"{path.name}: unsupported file type '{path.suffix or '(no extension)'}'; "
            f"supported: {', '.join(sorted(READERS))}"
        )
    try:
        if not path.is_file():
            raise ReaderError("file not found (or it is a folder); check the path")
        if path.stat().st_size == 0:
            raise ReaderError("the file is empty (0 bytes); re-export or re-copy it")
        return reader(path)
    except ReaderError as exc:
        raise ReaderError(f"{path.name}: {exc}") from exc
    except OSError as exc:
        raise ReaderError(
            f"{path.name}: cannot read the file ({exc.strerror or exc}); "
            "check that you have permission to read it"
        ) from exc


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
    """PDF: one ``text`` record per page that has extractable text, ``page`` 1-based."""
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
    for number, page in enumerate(pages, start=1):
        try:
            text = clean_text(page.extract_text() or "")
        except Exception as exc:
            problems.append(f"page {number}: text extraction failed ({exc})")
            continue
        if text:
            records.append(SourceRecord("text", text, page=number))
    if not records:
        raise ReaderError("no extractable text; scanned PDFs need OCR, which is not supported yet")
    return ReadResult(records, problems)


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
    """DOCX: paragraphs and tables in document order as one ``text`` record; headings get '#'."""
    if not zipfile.is_zipfile(path):
        raise ReaderError(
            "not a valid .docx file (it is not a zip package); if it is an old .doc or another "
            "format renamed, open it in Word or LibreOffice and save it as .docx"
        )
    import docx

    try:
        document = docx.Document(str(path))
        blocks = [_docx_block(item) for item in document.iter_inner_content()]
    except OSError:
        raise
    except Exception as exc:  # python-docx raises KeyError/ValueError/lxml errors for broken packages
        raise ReaderError(
            f"not a readable Word document (main part word/document.xml missing or damaged: {exc}); "
            "open it in Word or LibreOffice and save it again as .docx"
        ) from exc
    text = clean_text("\n\n".join(block for block in blocks if block))
    if not text:
        raise ReaderError("the document contains no text")
    return ReadResult([SourceRecord("text", text)])


def _docx_block(item: Any) -> str:
    """Markdown-ish rendering of one paragraph (heading -> '#' prefix) or table (' | ' rows)."""
    if hasattr(item, "rows"):
        return "\n".join(" | ".join(_row_cells(row)) for row in item.rows)
    text = item.text.strip()
    level = _heading_level(getattr(item.style, "name", None) or "")
    return f"{'#' * level} {text}" if text and level else text


def _row_cells(row: Any) -> list[str]:
    """Cell texts of a table row; a merged cell is repeated by python-docx, so keep it once."""
    cells: list[str] = []
    previous = None
    for cell in row.cells:
        if cell._tc is not previous:
            cells.append(cell.text.strip())
        previous = cell._tc
    return cells


def _heading_level(style_name: str) -> int:
    """1-6 for 'Title' / 'Heading N' paragraph styles, 0 for everything else."""
    if style_name == "Title":
        return 1
    prefix, _, number = style_name.partition(" ")
    if prefix == "Heading" and number.isdigit():
        return min(max(int(number), 1), 6)
    return 0


# --- CSV / TSV ------------------------------------------------------------------------------


def _read_delimited(path: Path) -> ReadResult:
    """CSV/TSV: Q&A columns give ``qa`` records, any other table gives one ``text`` record per row."""
    text, _ = decode_bytes(path.read_bytes())
    rows = _csv_rows(text, default="\t" if path.suffix.lower() == ".tsv" else ",")
    _, header = next(rows, (1, []))
    columns = [name.strip() for name in header]
    if not any(columns):
        raise ReaderError("the first row must be a header naming the columns")
    qa_pair = _find_qa_keys(columns)
    records: list[SourceRecord] = []
    problems: list[str] = []
    for line, row in rows:
        if not any(cell.strip() for cell in row):
            continue  # blank lines are layout, not data
        if len(row) > len(columns):
            problems.append(f"row {line}: {len(row)} fields, header has {len(columns)}; extras ignored")
        values = dict(zip(columns, row, strict=False))
        record = _qa_record(values, qa_pair, line) if qa_pair else _row_text_record(values, line)
        if isinstance(record, str):
            problems.append(f"row {line}: {record}")
        else:
            records.append(record)
    return _non_empty(ReadResult(records, problems), "rows")


def _csv_rows(text: str, default: str) -> Iterator[tuple[int, list[str]]]:
    """(1-based line where the row starts, cells) for every row, with a sniffed delimiter."""
    first_line = text.split("\n", 1)[0]
    try:
        delimiter = csv.Sniffer().sniff(text[:65536], delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = default
    if delimiter not in first_line and default in first_line:
        delimiter = default  # the sniffer was misled by punctuation inside the data
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    line = 1
    try:
        for row in reader:
            yield line, row
            line = reader.line_num + 1
    except csv.Error as exc:
        raise ReaderError(f"malformed CSV near line {reader.line_num}: {exc}") from exc


def _row_text_record(values: dict[str, str], line: int) -> SourceRecord | str:
    """A non-Q&A row as 'col: value; col: value' text, or a problem description."""
    text = clean_text("; ".join(f"{key}: {value.strip()}" for key, value in values.items() if value.strip()))
    return SourceRecord("text", text, line=line) if text else "no values"


# --- Q&A and conversations (shared by CSV and JSON) -----------------------------------------


def _find_qa_keys(keys: list[str]) -> tuple[str, str] | None:
    """The actual (question key, answer key) among ``keys``, matched case-insensitively."""
    by_lower = {key.strip().lower(): key for key in keys}
    for question, answer in QA_COLUMNS:
        if question in by_lower and answer in by_lower:
            return by_lower[question], by_lower[answer]
    return None


def _qa_record(values: dict[str, Any], pair: tuple[str, str], line: int | None) -> SourceRecord | str:
    """A ``qa`` record from a row / object, or a problem description ("empty answer")."""
    question = clean_message(_as_text(values.get(pair[0])))
    answer = clean_message(_as_text(values.get(pair[1])))
    extra = {key: value for key, value in values.items() if key not in pair and value not in ("", None)}
    # Alpaca-style data splits the user turn into instruction + input.
    input_key = next((key for key in extra if key.lower() == "input"), None)
    if pair[0].lower() == "instruction" and input_key:
        question = f"{question}\n\n{clean_message(_as_text(extra.pop(input_key)))}".strip()
    if not question:
        return f"empty {pair[0]}"
    if not answer:
        return f"empty {pair[1]}"
    messages: list[Message] = [
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]
    meta = {key: value for key, value in extra.items() if key.lower() != "importance"}
    importance_key = next((key for key in extra if key.lower() == "importance"), None)
    if importance_key:
        meta["importance"] = _number_or_text(extra[importance_key])
    return SourceRecord("qa", _render(messages), line=line, messages=messages, meta=meta)


def _number_or_text(value: Any) -> Any:
    """An importance written as text (CSV cells) becomes a float; anything else is kept as given."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value.strip()
    return value


def _conversation_record(turns: list[Any], line: int | None) -> SourceRecord | str:
    """A ``conversation`` record from OpenAI (role/content) or ShareGPT (from/value) turns."""
    messages: list[Message] = []
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            return f"message {number} is not an object"
        raw_role = str(turn.get("role", turn.get("from", ""))).strip().lower()
        role = _ROLE_NAMES.get(raw_role)
        if role is None:
            return f"message {number} has unsupported role '{raw_role}'; use system, user or assistant"
        content = clean_message(_as_text(turn.get("content", turn.get("value"))))
        if content:  # an empty turn carries nothing to learn
            messages.append({"role": role, "content": content})
    while messages and messages[-1]["role"] != "assistant":
        messages.pop()  # a trailing user turn has no answer to learn from
    roles = {message["role"] for message in messages}
    if not {"user", "assistant"} <= roles:
        return "conversation has no user message followed by a non-empty assistant reply"
    return SourceRecord("conversation", _render(messages), line=line, messages=messages)


def _render(messages: list[Message]) -> str:
    """Plain 'role: content' rendering used as the record's text."""
    return "\n".join(f"{message['role']}: {message['content']}" for message in messages)


def _as_text(value: Any) -> str:
    """Message content as a string; OpenAI content-part lists keep only their text parts."""
    if value is None:
        return ""
    if isinstance(value, list):
        return "\n".join(str(part.get("text", "")) for part in value if isinstance(part, dict))
    return value if isinstance(value, str) else str(value)


# --- JSON / JSONL ---------------------------------------------------------------------------


def _read_json(path: Path) -> ReadResult:
    """JSON: one example, a list of examples, a wrapper object with a list, or any document as text."""
    text, _ = decode_bytes(path.read_bytes())
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several JSON values in a row: a JSONL file named .json
            return _read_jsonl_text(text)
        raise ReaderError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; fix it there or validate "
            "the file with a JSON linter"
        ) from exc
    return _non_empty(_from_document(document), "examples")


def _read_jsonl(path: Path) -> ReadResult:
    """JSONL: one example (or text object) per line; bad lines are problems, good lines are kept."""
    text, _ = decode_bytes(path.read_bytes())
    return _read_jsonl_text(text)


def _read_jsonl_text(text: str) -> ReadResult:
    """Parse JSON lines text; see :func:`_read_jsonl`."""
    result = ReadResult([])
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            result.problems.append(f"line {number}: invalid JSON: {exc.msg} (column {exc.colno})")
            continue
        record = _example(value, number)
        if record is None:
            record = _text_record(value, number) or "no text in this line"
        if isinstance(record, str):
            result.problems.append(f"line {number}: {record}")
        else:
            result.records.append(record)
    return _non_empty(result, "lines")


def _from_document(document: Any) -> ReadResult:
    """Records from a parsed JSON document of any supported shape."""
    single = _example(document, None)
    if isinstance(single, SourceRecord):
        return ReadResult([single])
    if isinstance(single, str):
        return ReadResult([], [f"the example: {single}"])
    items = _example_list(document)
    results = [(number, _example(item, None)) for number, item in enumerate(items or [], start=1)]
    if not any(record is not None for _, record in results):
        text = _text_record(document, None)  # not chat data: keep it as a document
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
        for key in _WRAPPER_KEYS:
            if isinstance(document.get(key), list):
                return list(document[key])
    return None


def _example(value: Any, line: int | None) -> SourceRecord | str | None:
    """A record from one chat/Q&A object, a problem description, or None if it is no such object."""
    if not isinstance(value, dict):
        return None
    for key in ("messages", "conversations"):
        turns = value.get(key)
        if isinstance(turns, list) and turns and _looks_like_turn(turns[0]):
            return _conversation_record(turns, line)
    pair = _find_qa_keys(list(value))
    return _qa_record(value, pair, line) if pair else None


def _looks_like_turn(turn: Any) -> bool:
    """True for a chat turn object; a wrapper's list of examples holds objects without roles."""
    return isinstance(turn, dict) and ("role" in turn or "from" in turn)


def _text_record(value: Any, line: int | None) -> SourceRecord | None:
    """Arbitrary JSON as one ``text`` record of its string values, one per line; None if none."""
    text = clean_text("\n".join(_strings(value)))
    return SourceRecord("text", text, line=line) if text else None


def _strings(value: Any) -> Iterator[str]:
    """Every non-blank string value in a JSON value, depth first, in document order."""
    if isinstance(value, str):
        if value.strip():
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _non_empty(result: ReadResult, unit: str) -> ReadResult:
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


READERS: dict[str, Reader] = {
    ".txt": _read_text,
    ".md": _read_text,
    ".markdown": _read_text,
    ".pdf": _read_pdf,
    ".docx": _read_docx,
    ".csv": _read_delimited,
    ".tsv": _read_delimited,
    ".json": _read_json,
    ".jsonl": _read_jsonl,
}
"""Reader per lower-case file extension; later formats (HTML, source code) register here."""

SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(sorted(READERS))
