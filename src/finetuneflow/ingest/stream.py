"""Large files read in pieces: records one by one, long text as a stream of cleaned segments.

A file over ``segment_mb`` comes here instead of :func:`~finetuneflow.ingest.readers.read_file`,
so memory does not grow with its size: plain text and Markdown are decoded and cleaned segment by
segment (cut where cleaning cannot reach across, see :data:`~finetuneflow.text.clean.SAFE_CUT`),
JSONL line by line, a JSON list item by item with ``ijson``; every other type is read whole, up
to ``max_record_mb``. What comes out equals what ``read_file`` gives for the same file, except that
long text stays a :class:`LongText` for :func:`~finetuneflow.ingest.chunking.chunk_stream`.
"""

from __future__ import annotations

import codecs
import io
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from finetuneflow.errors import ReaderError
from finetuneflow.ingest import json_object, json_shapes
from finetuneflow.ingest.boilerplate import strip_repeated_lines
from finetuneflow.ingest.delimited import delimited_items
from finetuneflow.ingest.limits import current, too_deep, too_long
from finetuneflow.ingest.readers import (
    READERS,
    TEXT_KINDS,
    ReadResult,
    jsonl_records,
    non_empty,
    read_file,
)
from finetuneflow.ingest.sniff import HEAD_BYTES, sniff
from finetuneflow.records import SourceRecord
from finetuneflow.text.clean import MIXED, SAFE_CUT, STRAY_BYTES, clean_segment, decode_bytes

Progress = Callable[[int], None]
"""Called with the bytes of the file read so far."""

_CUT_LOOKBACK = 4096  # characters searched for a safe cut at the end of the pending text
_FORCED_CUT = 8  # pending text without any safe cut is cleaned anyway past this many segments


@dataclass
class LongText:
    """A ``text`` record too long to hold whole: its cleaned text as consecutive segments."""

    segments: Iterator[str]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class StreamLog:
    """What reading a large file said besides its records."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    boilerplate_lines: int = 0


Item = SourceRecord | LongText


def stream_items(path: Path, log: StreamLog, progress: Progress) -> Iterator[Item]:
    """The records of a large file, read in pieces where its type allows.

    Raises:
        ReaderError: as :func:`~finetuneflow.ingest.readers.read_file`, and for a record over
            ``max_record_mb`` or JSON deeper than ``max_depth`` (each named with its flag).
    """
    with path.open("rb") as handle:
        kind = sniff(path, handle.read(HEAD_BYTES), READERS)
    if kind in TEXT_KINDS:
        yield from _text_items(path, progress)
    elif kind == ".jsonl":
        yield from _counted(_jsonl_items(path, log, progress), "lines")
    elif kind == ".json":
        yield from _json_items(path, log, progress)
    elif kind in (".csv", ".tsv"):
        yield from _delimited(path, log, progress)
    else:
        result = read_file(path)  # refuses files over max_record_mb itself
        records, log.boilerplate_lines = strip_repeated_lines(result.records)
        log.problems += result.problems
        log.notes += result.notes
        progress(path.stat().st_size)
        yield from records


def _counted(items: Iterator[Item], unit: str) -> Iterator[Item]:
    """``items``, raising like ``read_file`` when there is none (problems are in the log)."""
    first = next(items, None)
    if first is None:
        raise ReaderError(f"no usable {unit} found in the file")
    yield first
    yield from items


# --- bytes to clean text ---------------------------------------------------------------------


class _Counting:
    """A binary file that reports how far it has been read; with ``most``, refuses to read more
    than that past ``mark`` (a list item built from what it reads: :func:`_bounded`)."""

    def __init__(self, handle: IO[bytes], progress: Progress) -> None:
        self.handle, self.progress, self.done = handle, progress, 0
        self.mark, self.most, self.until = 0, 0, 0

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.done += len(data)
        self.progress(self.done)
        if self.most and min(self.done, self.until) - self.mark > self.most:
            raise ReaderError(too_long("a JSON list item", min(self.done, self.until) - self.mark))
        return data


def _bounded(items: Iterable[Any], counted: _Counting, start: int, end: int) -> Iterator[Any]:
    """The items of a list within bytes ``start``-``end`` of the file ``counted`` reads, each
    refused once its part of the file passes ``max_record_mb`` while it is built: an item of many
    short strings passes the string check, and its values are held in memory. What was read since
    the last item (or the list's start) is all the current item's: the parser reads ahead of it."""
    counted.mark, counted.most, counted.until = start, current().max_record, end
    for item in items:
        counted.mark = counted.done
        yield item


def _encoding(path: Path) -> str:
    """The encoding ``decode_bytes`` would pick for the whole file, decided without holding it:
    UTF-16 by its byte-order mark, UTF-8 when every byte decodes, else from the segment where
    UTF-8 failed (the head of a large file is often plain ASCII, which says nothing of the rest).

    Raises:
        ReaderError: the file looks binary.
    """
    block = current().segment
    with path.open("rb") as handle:
        head = handle.read(block)
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
        if b"\x00" in head[:8192]:
            raise ReaderError("this looks like a binary file, not text; check the file type")
        decoder = codecs.getincrementaldecoder("utf-8")()
        utf8_seen = False  # non-ASCII text that decoded as UTF-8 before the failing segment
        try:
            data = head
            while data:
                decoder.decode(data)
                utf8_seen = utf8_seen or not data.isascii()
                data = handle.read(block)
            decoder.decode(b"", final=True)
            return "utf-8-sig"
        except UnicodeDecodeError:
            encoding = decode_bytes(data or head)[1]
            if utf8_seen or encoding == MIXED:
                return MIXED
            # a segment that decodes alone failed only across its end: the file's last character
            return "latin-1" if encoding == "utf-8" else encoding


def decoded(path: Path, progress: Progress) -> tuple[str, Iterator[str]]:
    """(encoding as reported, the file's text in pieces of about one segment).

    Raises:
        ReaderError: binary, or damaged in its encoding (while iterating).
    """
    encoding = _encoding(path)
    codec, errors = _codec(encoding)

    def pieces() -> Iterator[str]:
        decoder = codecs.getincrementaldecoder(codec)(errors)
        with path.open("rb") as raw:
            handle = _Counting(raw, progress)
            try:
                for block in iter(lambda: handle.read(current().segment), b""):
                    yield decoder.decode(block)
                yield decoder.decode(b"", final=True)
            except UnicodeDecodeError as exc:
                raise ReaderError(f"damaged {encoding} text ({exc.reason}); save it again as UTF-8") from exc

    return ("utf-8" if encoding == "utf-8-sig" else encoding), pieces()


def _codec(encoding: str) -> tuple[str, str]:
    """(codec, errors) that read a file of ``encoding`` as :func:`_encoding` named it."""
    if encoding == MIXED:
        return "utf-8-sig", STRAY_BYTES
    return encoding, "strict" if encoding in ("utf-8-sig", "utf-16") else "replace"


def clean_pieces(raw: Iterable[str]) -> Iterator[str]:
    """Cleaned segments whose concatenation is ``clean_text("".join(raw))``."""
    return _stripped(_cleaned(raw))


def _cleaned(raw: Iterable[str]) -> Iterator[str]:
    pending = ""
    for piece in raw:
        pending += piece
        cut = _last_cut(pending)
        if cut is None:
            if len(pending) < _FORCED_CUT * current().segment:
                continue
            cut = len(pending)  # no safe place in 8 segments (one huge token?): cleaned as is
        yield clean_segment(pending[:cut])
        pending = pending[cut:]
    yield clean_segment(pending)


def _last_cut(text: str) -> int | None:
    last = None
    for match in SAFE_CUT.finditer(text, max(1, len(text) - _CUT_LOOKBACK)):
        last = match.end()
    return last if last and last < len(text) else None


def _stripped(cleaned: Iterator[str]) -> Iterator[str]:
    """The segments with the whole text's leading and trailing whitespace removed."""
    held = ""  # whitespace at the end of what was yielded: kept only if more text follows
    started = False
    for out in cleaned:
        if not started:
            out = out.lstrip()
            if not out:
                continue
            started = True
        body = out.rstrip()
        if body:
            yield held + body
            held = out[len(body) :]
        else:
            held += out


def _text_items(path: Path, progress: Progress) -> Iterator[Item]:
    encoding, pieces = decoded(path, progress)
    segments = clean_pieces(pieces)
    first = next(segments, None)
    if first is None:
        raise ReaderError("the file contains only whitespace; nothing to learn from")
    yield LongText(itertools.chain([first], segments), {"encoding": encoding})


# --- CSV / TSV ------------------------------------------------------------------------------


class _CountingRaw(io.RawIOBase):
    """A raw binary file that reports how far it has been read (under a ``TextIOWrapper``)."""

    def __init__(self, handle: IO[bytes], progress: Progress) -> None:
        super().__init__()
        self.handle, self.progress, self.done = handle, progress, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.handle.readinto(buffer)  # type: ignore[attr-defined]
        self.done += n or 0
        self.progress(self.done)
        return n or 0


def _delimited(path: Path, log: StreamLog, progress: Progress) -> Iterator[Item]:
    """Rows one by one from a text stream over the file, as ``readers`` reads a small one."""
    encoding = _encoding(path)
    codec, errors = _codec(encoding)
    default = "\t" if path.suffix.lower() == ".tsv" else ","
    produced = False
    with path.open("rb") as raw:
        buffered = io.BufferedReader(_CountingRaw(raw, progress), current().segment)
        stream = io.TextIOWrapper(buffered, encoding=codec, errors=errors, newline="")
        try:
            for item in delimited_items(stream, default):
                if isinstance(item, str):
                    log.problems.append(item)
                else:
                    produced = True
                    yield item
        except UnicodeDecodeError as exc:
            raise ReaderError(f"damaged {encoding} text ({exc.reason}); save it again as UTF-8") from exc
    if not produced:
        non_empty(ReadResult([], log.problems), "rows")


# --- JSONL and JSON --------------------------------------------------------------------------


def lines(pieces: Iterable[str]) -> Iterator[tuple[int, str | None]]:
    """(1-based number, line) of JSON Lines text, cut at "\n" only (``str.splitlines`` would also
    cut at U+2028, U+2029 and U+0085, which JSON allows raw inside a string); None for a line longer
    than ``max_record_mb`` (its text is dropped as it is read)."""
    limit = current().max_record
    rest, number, skipping = "", 0, 0
    for piece in pieces:
        found = (rest + piece).split("\n")
        rest = found.pop()
        for line in found:
            number += 1
            if skipping:
                yield number, None
                skipping = 0
            else:
                yield number, line.removesuffix("\r")
        if len(rest) > limit:
            skipping, rest = skipping + len(rest), ""
    if skipping:
        yield number + 1, None
    elif rest:
        yield number + 1, rest.removesuffix("\r")


def _jsonl_items(path: Path, log: StreamLog, progress: Progress) -> Iterator[Item]:
    _, pieces = decoded(path, progress)
    for item in jsonl_records(lines(pieces)):
        if isinstance(item, str):
            log.problems.append(item)
        else:
            yield item


def _json_items(path: Path, log: StreamLog, progress: Progress) -> Iterator[Item]:
    """A top-level list item by item, an object as :func:`json_object.plan` says; any other
    document read whole (up to ``max_record_mb``)."""
    import ijson

    if path.stat().st_size > current().max_record:  # the parser would build a huge string whole
        with path.open("rb") as raw:
            json_object.check_strings(json_object.as_utf8(raw), current().max_record)
    with path.open("rb") as raw:
        counted = _Counting(raw, progress)
        events = ijson.basic_parse(json_object.as_utf8(counted), use_float=True)
        try:
            first, _ = next(events)
        except (ijson.JSONError, StopIteration) as exc:
            raise json_object.invalid(exc) from exc
        if first == "start_array":
            items = _bounded(_items(events), counted, 0, path.stat().st_size)
            yield from _list_items(items, log, lambda: _document_text(path))
            return
    how, key, start, end = _object_plan(path) if first == "start_map" else (json_object.WHOLE, "", 0, 0)
    if how == json_object.ITEMS:
        with path.open("rb") as raw:
            counted = _Counting(raw, progress)
            items = _bounded(json_object.items(json_object.as_utf8(counted), key), counted, start, end)
            yield from _list_items(items, log, lambda: _object_text(path, None))
    elif how == json_object.TEXT:
        yield from _object_text(path, progress)
    else:
        size = path.stat().st_size
        if size > current().max_record:
            what = "a JSON document read whole (one example, a 'facts' list or a repeated key)"
            raise ReaderError(too_long(what if first == "start_map" else "a JSON document", size))
        result = non_empty(read_file(path), "examples")
        log.problems += result.problems
        yield from result.records


def _object_plan(path: Path) -> tuple[str, str, int, int]:
    """How to read a JSON object (its strings over ``max_record_mb`` refused before), and the
    bytes the wrapper's list lies within (from its key to the next key or the end). A file that
    fits in ``max_record_mb`` and fails the survey is read whole, whose reader says where it is
    invalid (or reads it as JSON lines)."""
    fits = path.stat().st_size <= current().max_record
    with path.open("rb") as raw:
        counted = _Counting(raw, lambda _: None)
        try:
            found = json_object.survey(json_object.as_utf8(counted), lambda: counted.done)
            how, key = json_object.plan(found)
            keys = list(found.offsets)
            later = keys[keys.index(key) + 1 :] if key in found.offsets else []
            end = found.offsets[later[0]] if later else path.stat().st_size
            return how, key, found.offsets.get(key, 0), end
        except ReaderError:
            if fits:
                return json_object.WHOLE, "", 0, 0
            raise


def _object_text(path: Path, progress: Progress | None) -> Iterator[Item]:
    """The strings of a JSON object, one per line, cleaned as one long text."""

    def strings() -> Iterator[str]:
        with path.open("rb") as raw:
            yield from json_object.document_strings(
                json_object.as_utf8(_Counting(raw, progress) if progress else raw)
            )

    segments = clean_pieces(strings())
    head = next(segments, None)
    if head is not None:
        yield LongText(itertools.chain([head], segments))


def _list_items(items: Iterable[Any], log: StreamLog, text: Callable[[], Iterator[Item]]) -> Iterator[Item]:
    """The examples of a list, as ``readers`` reads them: examples and the reasons of the items
    that are not; a list with no example at all gives ``text()``, the document's text."""
    leading = 0  # items before the first example: none of them looked like one
    for number, item in enumerate(items, start=1):
        record = json_shapes.example(item, None)
        if record is None and leading == number - 1:
            leading = number
            continue
        for earlier in range(1, leading + 1):
            log.problems.append(f"item {earlier}: {_NOT_EXAMPLE}")
        leading = -1
        if isinstance(record, SourceRecord):
            yield record
        else:
            log.problems.append(f"item {number}: {record or _NOT_EXAMPLE}")
    if leading >= 0:  # not chat data: the strings of the whole document as text
        yield from text()


_NOT_EXAMPLE = "not a chat or Q&A example (needs 'messages', 'conversations' or Q&A keys)"


def _items(events: Iterator[tuple[str, Any]]) -> Iterator[Any]:
    """The values of the top-level list whose opening event was consumed, built one by one.

    Raises:
        ReaderError: an item nests deeper than ``max_depth`` or the JSON is invalid.
    """
    import ijson

    limit = current().max_depth
    depth, builder = 1, None
    try:
        for event, value in events:
            if event in ("start_map", "start_array"):
                depth += 1
                if depth > limit:
                    raise ReaderError(too_deep(depth))
            elif event in ("end_map", "end_array"):
                depth -= 1
            if depth == 0:
                return
            if builder is None:
                builder = ijson.ObjectBuilder()
            builder.event(event, value)
            if depth == 1:
                yield builder.value
                builder = None
    except ijson.JSONError as exc:
        raise json_object.invalid(exc) from exc


def _document_text(path: Path) -> Iterator[Item]:
    """The list's strings, one per line, cleaned as one long text (a second pass over the file)."""
    import ijson

    def strings() -> Iterator[str]:
        with path.open("rb") as handle:
            first = True
            for item in ijson.items(json_object.as_utf8(handle), "item", use_float=True):
                for text in json_shapes.strings(item):
                    yield text if first else "\n" + text
                    first = False

    segments = clean_pieces(strings())
    head = next(segments, None)
    if head is not None:
        yield LongText(itertools.chain([head], segments))
