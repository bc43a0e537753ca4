"""CSV / TSV read row by row from a text stream: Q&A columns give ``qa`` records, any other table
one ``text`` record per row.

The same code reads a small file (its decoded text in a ``StringIO``) and a large one (a
``TextIOWrapper`` over the file, see :mod:`~finetuneflow.ingest.stream`), so both give the same
records and the same row numbers; only one line and one row are held at a time.
"""

from __future__ import annotations

import csv
import itertools
import re
from collections.abc import Iterator
from typing import Protocol

from finetuneflow.errors import ReaderError
from finetuneflow.ingest.json_shapes import find_qa_keys, qa_record
from finetuneflow.ingest.limits import current, too_long
from finetuneflow.records import SourceRecord
from finetuneflow.text.clean import clean_text

SNIFF_CHARS = 16384
"""Text the delimiter is sniffed from, in whole lines where it holds one. ``csv.Sniffer``'s
quote-guessing regexes take time quadratic in it on text like ',"x,"x,"x...' (quotes that never
close): 9.0 s at 65,536 characters (the size before 2026-12-07), 0.65 s at 16,384 (Zen 5); a dozen
lines of a real sheet fit in it."""
# A header line "#,question,answer" (a column of row numbers named '#'), not a '#' note above it.
_NUMBER_COLUMN = re.compile(r"#[ ]*[,;\t|]")


class Lines(Protocol):
    """A text stream opened with ``newline=""`` (line ends kept as written)."""

    def readline(self, size: int = -1, /) -> str: ...


def delimited_items(stream: Lines, default: str) -> Iterator[SourceRecord | str]:
    """The records of a CSV / TSV text, and one problem line (``"row 7: empty answer"``) per
    unusable row; ``default`` is the delimiter when sniffing finds none.

    Raises:
        ReaderError: no header row, malformed CSV, or a line over ``max_record_mb``.
    """
    rows = _csv_rows(stream, default)
    _, header = next(rows, (1, []))
    columns = [name.strip() for name in header]
    if not any(columns):
        raise ReaderError("the first row must be a header naming the columns")
    qa_pair = find_qa_keys(columns)
    for line, row in rows:
        if not any(cell.strip() for cell in row):
            continue  # blank lines are layout, not data
        if len(row) > len(columns):
            yield f"row {line}: {len(row)} fields, header has {len(columns)}; extras ignored"
        values = dict(zip(columns, row, strict=False))
        record = qa_record(values, qa_pair, line) if qa_pair else _row_text_record(values, line)
        yield f"row {line}: {record}" if isinstance(record, str) else record


def _csv_rows(stream: Lines, default: str) -> Iterator[tuple[int, list[str]]]:
    """(1-based line where the row starts, cells) for every row, with a sniffed delimiter.

    Leading '#' lines (a data-source note above the header, as in many exported sheets) are
    skipped; a '#' line runs to the next '\\n', as the whole-text reader cut it. A header whose
    first column is named '#' (the row numbers of an exported table) is not a note.
    """
    lines = _bounded(stream)
    skipped = 0
    line = next(lines, "")
    while line.startswith("#") and not _NUMBER_COLUMN.match(line):
        while line and not line.endswith("\n"):  # a lone '\r' did not end the note
            line = next(lines, "")
        line = next(lines, "")
        skipped += 1
    head = [line] if line else []
    size, ended = len(line), line.endswith("\n")
    # Enough text to sniff, and the first line through its '\n' (bounded: one record at most).
    while line and size < current().max_record and (size < SNIFF_CHARS or not ended):
        line = next(lines, "")
        head += [line] if line else []
        size, ended = size + len(line), ended or line.endswith("\n")
    delimiter = _delimiter("".join(head), default)
    # csv's own cap on a cell (131,072 characters by default) would refuse a long answer that
    # max_record_mb allows; the cap is the process's, so it is only ever raised (to a C long's
    # range on every platform)
    csv.field_size_limit(max(csv.field_size_limit(), min(current().max_record, 2**31 - 1)))
    reader = csv.reader(itertools.chain(head, lines), delimiter=delimiter)
    number = 1
    try:
        for row in reader:
            yield number + skipped, row
            number = reader.line_num + 1
    except csv.Error as exc:
        raise ReaderError(f"malformed CSV near line {reader.line_num + skipped}: {exc}") from exc


def _delimiter(head: str, default: str) -> str:
    first_line = head.split("\n", 1)[0]
    sample = head[:SNIFF_CHARS]
    if len(head) > SNIFF_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n") + 1]  # whole lines: a cut one skews the counts
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = default
    if delimiter not in first_line and default in first_line:
        delimiter = default  # the sniffer was misled by punctuation inside the data
    return delimiter


def _bounded(stream: Lines) -> Iterator[str]:
    """The stream's lines; one longer than ``max_record_mb`` is refused before it is all read."""
    limit = current().max_record
    while line := stream.readline(limit + 1):
        if len(line) > limit:
            raise ReaderError(too_long("a CSV line", len(line)))
        yield line


def _row_text_record(values: dict[str, str], line: int) -> SourceRecord | str:
    """A non-Q&A row as 'col: value; col: value' text, or a problem description."""
    text = clean_text("; ".join(f"{key}: {value.strip()}" for key, value in values.items() if value.strip()))
    return SourceRecord("text", text, line=line) if text else "no values"
