"""Excel (.xlsx) workbooks, read sheet by sheet and row by row straight from the XML.

A sheet whose first non-blank row names question / answer columns (the CSV reader's
:data:`~finetuneflow.ingest.json_shapes.QA_COLUMNS`, e.g. ``question | answer | importance``)
gives one ``qa`` record per row, exactly as a CSV would. Any other sheet is a table kept as text:
rows as ``' | '``-joined cells under a ``## <sheet>`` line, cut into records of about
:data:`TABLE_BLOCK_CHARS` characters, each starting again with the header row so a chunk reads on
its own. ``line`` is the row number in the sheet (the block's first row for a table),
``meta["sheet"]`` the sheet's name, ``meta["rows"]`` a table block's first and last row.

Rows are parsed one at a time (:meth:`Package.elements`), so a big sheet never sits in memory;
only the shared-string table does, as in Excel itself. Cells show what Excel shows for the common
cases: shared and inline strings (with the ``_x000D_`` escapes undone), formula results, TRUE /
FALSE, whole numbers without ``.0``, and dates (numbers whose style is a date format) as ISO dates.
Error values (``#DIV/0!``) are blank.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import chain, islice
from pathlib import Path
from typing import Any

from finetuneflow.errors import ReaderError
from finetuneflow.ingest.json_shapes import find_qa_keys, qa_record
from finetuneflow.ingest.ooxml import Package, open_package
from finetuneflow.records import SourceRecord
from finetuneflow.text.clean import clean_text

_S = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_MAIN_PART = "xl/workbook.xml"
FIX = "open it in Excel or LibreOffice Calc and save it again as .xlsx"
TABLE_BLOCK_CHARS = 2000
"""A table sheet's text record ends once it holds this many characters (about 500 tokens)."""
QA_HEADER_SEARCH_ROWS = 5
"""A Q&A header is looked for in this many first non-blank rows (a sheet often has a title above)."""
MAX_COLUMNS = 1000
"""Cells right of this column are ignored: real tables are narrower, and a cell at XFD1 must not
make every row 16,384 cells wide."""
# Built-in number formats that show dates or times (ECMA-376 18.8.30, plus the CJK ones).
_DATE_FORMAT_IDS = frozenset({*range(14, 23), *range(27, 37), *range(45, 48), *range(50, 59)})
_FORMAT_NOISE = re.compile(r'"[^"]*"|\[[^\]]*\]|\\.|_.|\*.')  # literals, colours, padding
_COLUMN_LETTERS = re.compile(r"[A-Z]{1,3}")
_XSTRING_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def xlsx_records(path: Path) -> Iterator[SourceRecord | str]:
    """Records of every worksheet in workbook order, or problem lines (``"sheet 'Q&A' row 7: empty
    answer"``); chart sheets and empty sheets give nothing.

    Raises:
        ReaderError: a zip bomb, a damaged zip, or no readable ``xl/workbook.xml``.
    """
    with open_package(path, FIX) as package:
        book = package.xml(_MAIN_PART)
        parts = package.relationships(_MAIN_PART)
        cells = _CellReader(package, parts, book)
        for sheet in book.iterfind(f"{_S}sheets/{_S}sheet"):
            name = sheet.get("name", "")
            kind, part = parts.get(sheet.get(f"{_R}id", ""), ("", ""))
            if kind != "worksheet":
                continue  # a chart sheet or a dangling reference: no cells
            try:
                hidden = sheet.get("state") in ("hidden", "veryHidden")
                yield from _sheet_records(_rows(package, part, cells), name, hidden)
            except ReaderError as exc:
                yield f"sheet '{name}': {exc}"


def _rows(package: Package, part: str, cells: _CellReader) -> Iterator[tuple[int, list[str]]]:
    """(1-based row number, cell texts) of each non-blank row of a worksheet part."""
    number = 0
    for row in package.elements(part, f"{_S}row"):
        number = _int(row.get("r"), number + 1)
        values: dict[int, str] = {}
        column = 0
        for cell in row.iterchildren(f"{_S}c"):
            column = _column(cell.get("r"), column + 1)
            if column <= MAX_COLUMNS:
                text = cells.text(cell)
                if text:
                    values[column] = text
        if values:
            yield number, [values.get(k, "") for k in range(1, max(values) + 1)]


def _sheet_records(
    rows: Iterator[tuple[int, list[str]]], sheet: str, hidden: bool
) -> Iterator[SourceRecord | str]:
    """Q&A records when a header row names Q&A columns, else the sheet as blocks of table text.

    The Q&A header may sit under a few title rows (:data:`QA_HEADER_SEARCH_ROWS`), which are then
    not data.
    """
    top = list(islice(rows, QA_HEADER_SEARCH_ROWS))
    if not top:
        return
    meta: dict[str, Any] = {"sheet": sheet, **({"hidden": True} if hidden else {})}
    headers = [[name.strip() for name in cells] for _, cells in top]
    found = next(((k, pair) for k, names in enumerate(headers) if (pair := find_qa_keys(names))), None)
    if found is None:
        yield from _table_records(top[0], chain(top[1:], rows), meta)
        return
    at, pair = found
    header, rows = headers[at], chain(top[at + 1 :], rows)
    for number, row in rows:
        values = {name: value for name, value in zip(header, row, strict=False) if name}
        record = qa_record(values, pair, number)
        if isinstance(record, str):
            yield f"sheet '{sheet}' row {number}: {record}"
        else:
            record.meta.update(meta)
            yield record


def _table_records(
    header: tuple[int, list[str]], rows: Iterator[tuple[int, list[str]]], meta: dict[str, Any]
) -> Iterator[SourceRecord]:
    """The sheet as text: the header row, then rows, cut into blocks of about TABLE_BLOCK_CHARS."""
    heading = f"## {meta['sheet']}\n{_line(header[1])}" if meta["sheet"] else _line(header[1])
    block: list[str] = []
    start = end = header[0]
    for number, row in rows:
        if not block:
            start = number
        block.append(_line(row))
        end = number
        if sum(map(len, block)) >= TABLE_BLOCK_CHARS:
            yield _block_record(heading, block, start, end, meta)
            block = []
    if block or start == header[0]:  # a sheet that is only a header row still says what it holds
        yield _block_record(heading, block, start, end, meta)


def _block_record(heading: str, block: list[str], start: int, end: int, meta: dict[str, Any]) -> SourceRecord:
    text = clean_text("\n".join([heading, *block]))
    return SourceRecord("text", text, line=start, meta={**meta, "rows": [start, end]})


def _line(cells: list[str]) -> str:
    """A row as ' | '-joined cells, each on one line."""
    return " | ".join(" ".join(cell.split()) for cell in cells)


class _CellReader:
    """Turns ``<c>`` elements into the text Excel would show, with the workbook's shared strings,
    date styles and date system."""

    def __init__(self, package: Package, parts: dict[str, tuple[str, str]], book: Any) -> None:
        by_kind = {kind: part for kind, part in parts.values()}
        self.strings = _shared_strings(package, by_kind.get("sharedStrings"))
        self.date_styles = _date_styles(package, by_kind.get("styles"))
        properties = book.find(f"{_S}workbookPr")
        date1904 = properties is not None and properties.get("date1904") in ("1", "true")
        self.epoch = datetime(1904, 1, 1) if date1904 else datetime(1899, 12, 30)

    def text(self, cell: Any) -> str:
        """The shown text of one cell ('' for blank and error cells)."""
        kind = cell.get("t", "n")
        if kind == "inlineStr":
            inline = cell.find(f"{_S}is")
            return _string_item(inline) if inline is not None else ""
        value = cell.findtext(f"{_S}v")
        if value is None or kind == "e":
            return ""
        if kind == "s":
            index = _int(value, -1)
            return self.strings[index] if 0 <= index < len(self.strings) else ""
        if kind == "b":
            return "TRUE" if value.strip() == "1" else "FALSE"
        if kind == "n":
            return self._number(value, _int(cell.get("s"), 0) in self.date_styles)
        if kind == "str":  # a formula's text result
            return _unescaped(value)
        return value  # "d" (an ISO date) is shown as stored

    def _number(self, value: str, is_date: bool) -> str:
        try:
            number = float(value)
        except ValueError:
            return value.strip()
        if is_date and 0 <= number < 2_958_466:  # Excel's last date is 9999-12-31
            moment = self.epoch + timedelta(days=number)
            moment = moment.replace(microsecond=0) + timedelta(seconds=round(moment.microsecond / 1e6))
            return moment.date().isoformat() if moment.time() == datetime.min.time() else moment.isoformat()
        if number.is_integer() and abs(number) < 1e15:
            return str(int(number))
        return value.strip()


def _shared_strings(package: Package, part: str | None) -> list[str]:
    """The workbook's shared-string table (cells of type 's' index it)."""
    if part is None:
        return []
    return [_string_item(item) for item in package.elements(part, f"{_S}si")]


def _string_item(item: Any) -> str:
    """Text of a string item: plain or rich-text runs; phonetic guides (``rPh``) left out."""
    runs = (node.text or "" for node in item.iter(f"{_S}t") if node.getparent().tag != f"{_S}rPh")
    return _unescaped("".join(runs))


def _unescaped(text: str) -> str:
    """A cell's string as Excel shows it: SpreadsheetML writes characters XML cannot hold as
    ``_xHHHH_`` (ECMA-376 ST_Xstring; Excel writes a cell's Windows line breaks as ``_x000D_``, and a
    typed ``_x0041_`` as ``_x005F_x0041_``), a UTF-16 surrogate pair as two of them."""
    if "_x" not in text:
        return text
    text = _XSTRING_ESCAPE.sub(lambda match: chr(int(match[1], 16)), text)
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")  # pairs joined


def _date_styles(package: Package, part: str | None) -> frozenset[int]:
    """Indexes of the cell styles (``cellXfs``) whose number format shows a date or time."""
    if part is None:
        return frozenset()
    styles = package.xml(part)
    custom = {
        _int(fmt.get("numFmtId"), -1): fmt.get("formatCode", "")
        for fmt in styles.iterfind(f"{_S}numFmts/{_S}numFmt")
    }
    dates = set()
    for index, xf in enumerate(styles.iterfind(f"{_S}cellXfs/{_S}xf")):
        format_id = _int(xf.get("numFmtId"), 0)
        if format_id in _DATE_FORMAT_IDS or _is_date_format(custom.get(format_id, "")):
            dates.add(index)
    return frozenset(dates)


def _is_date_format(code: str) -> bool:
    """True for a custom number format that shows a date or time ('yyyy-mm-dd', 'h:mm AM/PM')."""
    bare = _FORMAT_NOISE.sub("", code.split(";", 1)[0]).lower()
    return bare != "general" and any(token in bare for token in "dmyhs")


def _column(ref: str | None, default: int) -> int:
    """The 1-based column of a cell reference ('B7' -> 2); ``default`` when there is none."""
    letters = ref.rstrip("0123456789") if ref else ""
    return _column_number(letters) if letters else default


@lru_cache(maxsize=4096)
def _column_number(letters: str) -> int:
    """'A' -> 1, 'AB' -> 28; past MAX_COLUMNS (so skipped) for anything but column letters."""
    if not _COLUMN_LETTERS.fullmatch(letters):
        return MAX_COLUMNS + 1
    column = 0
    for letter in letters:
        column = column * 26 + ord(letter) - 64
    return column


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default
