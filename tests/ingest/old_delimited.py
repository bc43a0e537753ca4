"""The CSV / TSV reader as it was before it streamed (main at fcc19d0), kept only as a test oracle:
it read the whole decoded text; the streaming reader must give the same records and problems."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

from finetuneflow.errors import ReaderError
from finetuneflow.ingest.json_shapes import find_qa_keys, qa_record
from finetuneflow.records import SourceRecord
from finetuneflow.text.clean import clean_text, decode_bytes


def read_delimited(path: Path) -> tuple[list[SourceRecord], list[str]]:
    text, _ = decode_bytes(path.read_bytes())
    rows = _csv_rows(text, default="\t" if path.suffix.lower() == ".tsv" else ",")
    _, header = next(rows, (1, []))
    columns = [name.strip() for name in header]
    if not any(columns):
        raise ReaderError("the first row must be a header naming the columns")
    qa_pair = find_qa_keys(columns)
    records: list[SourceRecord] = []
    problems: list[str] = []
    for line, row in rows:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(columns):
            problems.append(f"row {line}: {len(row)} fields, header has {len(columns)}; extras ignored")
        values = dict(zip(columns, row, strict=False))
        record = qa_record(values, qa_pair, line) if qa_pair else _row_text_record(values, line)
        if isinstance(record, str):
            problems.append(f"row {line}: {record}")
        else:
            records.append(record)
    return records, problems


def _csv_rows(text: str, default: str) -> Iterator[tuple[int, list[str]]]:
    skipped = 0
    while text.startswith("#"):
        _, _, text = text.partition("\n")
        skipped += 1
    first_line = text.split("\n", 1)[0]
    try:
        delimiter = csv.Sniffer().sniff(text[:65536], delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = default
    if delimiter not in first_line and default in first_line:
        delimiter = default
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    line = 1
    try:
        for row in reader:
            yield line + skipped, row
            line = reader.line_num + 1
    except csv.Error as exc:
        raise ReaderError(f"malformed CSV near line {reader.line_num + skipped}: {exc}") from exc


def _row_text_record(values: dict[str, str], line: int) -> SourceRecord | str:
    text = clean_text("; ".join(f"{key}: {value.strip()}" for key, value in values.items() if value.strip()))
    return SourceRecord("text", text, line=line) if text else "no values"
