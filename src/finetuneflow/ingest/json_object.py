"""A large JSON document that is an object, read in pieces where its shape allows.

The whole-document reader (:func:`~finetuneflow.ingest.readers._from_document`) decides what an
object holds from all of its top-level keys, so a first pass (:func:`survey`) looks at them
without building any value: which keys there are, what kind of value each has, whether a
``messages`` / ``conversations`` list starts with a chat turn. :func:`plan` then says how the
object can be read to give the same records: a wrapper's list item by item, the strings of a
document that holds no examples as one long text, or (a single example, a ``facts`` list, a
repeated key) whole, up to ``max_record_mb``. :func:`check_strings` refuses a string over
``max_record_mb`` before any parser builds it.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from finetuneflow.errors import ReaderError
from finetuneflow.ingest.json_shapes import find_qa_keys
from finetuneflow.ingest.limits import current, too_deep, too_long

WRAPPER_KEYS = ("conversations", "data", "examples", "items")
"""Keys whose list holds the examples, in the order the whole-document reader tries them."""
_TURN_KEYS = ("messages", "conversations")
_REASONING = ({"problem", "solution"}, {"question", "reasoning", "answer"})
WHOLE, ITEMS, TEXT = "whole", "items", "text"


class Bytes(Protocol):
    """A binary file (or a wrapper counting what is read of one)."""

    def read(self, size: int = -1, /) -> bytes: ...


def invalid(exc: Exception) -> ReaderError:
    """The error for JSON the streaming parser rejected: its first line only. yajl's message goes
    on to quote the text around the error, and a report must never show what a file holds (a key
    or a password on that line)."""
    text = str(exc)
    text = text[2:] if text.startswith(("b'", 'b"')) else text  # some messages arrive as bytes' repr
    first = text.replace("\\n", "\n").split("\n")[0].strip().rstrip(".")
    advice = "save it again as UTF-8" if "UTF8" in first else "validate the file with a JSON linter"
    return ReaderError(f"invalid JSON ({first}); {advice}")


def as_utf8(handle: Bytes) -> Bytes:
    """``handle``, at the file's start, as the streaming parser takes it: UTF-8 without a byte-order
    mark. JSON saved with a BOM or in UTF-16 (Windows PowerShell 5's ``ConvertTo-Json > file``
    writes UTF-16 with one) is transcoded as it is read, as the whole-file reader decodes it (UTF-16
    without a BOM looks binary to ``sniff`` and is refused before any reader)."""
    head = handle.read(3)
    if head.startswith(codecs.BOM_UTF8):
        return _Utf8(handle, b"", None)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return _Utf8(handle, head, "utf-16")
    return _Utf8(handle, head, None)


class _Utf8:
    """The bytes of ``handle`` after ``head`` (given back first), decoded from ``encoding`` and
    encoded as UTF-8 (None: passed as they are)."""

    def __init__(self, handle: Bytes, head: bytes, encoding: str | None) -> None:
        self.handle, self.pending, self.encoding = handle, head, encoding
        self.decoder = codecs.getincrementaldecoder(encoding)() if encoding else None

    def read(self, size: int = -1, /) -> bytes:
        if size == 0:  # ijson asks read(0) whether the file gives bytes or str: nothing consumed
            return b""
        while True:
            block = self.pending or self.handle.read(size if size > 0 else 1 << 16)
            self.pending = b""
            if self.decoder is None:
                return block
            try:
                text = self.decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                raise ReaderError(
                    f"damaged {self.encoding} text ({exc.reason}); save it again as UTF-8"
                ) from exc
            if text or not block:  # b"" only at the end: the parser stops there
                return text.encode("utf-8")


@dataclass
class Survey:
    """The top level of a JSON object, seen without building its values."""

    kinds: dict[str, str] = field(default_factory=dict)
    """Key -> ``"list"``, ``"map"``, ``"string"`` or ``"other"``, in document order."""
    turns: set[str] = field(default_factory=set)
    """The ``messages`` / ``conversations`` keys whose list starts with a chat turn."""
    repeated: bool = False
    """Some object (at any depth) repeats a key: ``json.loads`` keeps the last value."""
    offsets: dict[str, int] = field(default_factory=dict)
    """Top-level key -> bytes read when the parser reached it (``position``; at or a parser's
    read past the key)."""


def survey(handle: Bytes, position: Callable[[], int] = lambda: 0) -> Survey:
    """The top level of the object in ``handle``; ``position()`` says how much of it was read.

    Raises:
        ReaderError: nested deeper than ``max_depth``, or invalid JSON.
    """
    import ijson

    out, limit = Survey(), current().max_depth
    keys: list[set[str]] = []  # the keys seen so far in each open object (or list: unused)
    key, started = "", set()  # started: the turn lists whose first item has begun
    in_first = False  # inside the first item of a turn list (an object: are its keys a turn's?)
    try:
        for event, value in ijson.basic_parse(handle, use_float=True):
            depth = len(keys)
            if event == "map_key":
                out.repeated = out.repeated or value in keys[-1]
                keys[-1].add(value)
                if depth == 1:
                    key = value
                    out.offsets.setdefault(key, position())
                if in_first and depth == 3 and value in ("role", "from"):
                    out.turns.add(key)
                continue
            if event in ("end_map", "end_array"):
                keys.pop()
                in_first = in_first and len(keys) > 2
                continue
            if depth == 1:
                out.kinds[key] = _KINDS.get(event, "other")
            elif depth == 2 and key in _TURN_KEYS and out.kinds[key] == "list" and key not in started:
                started.add(key)
                in_first = event == "start_map"
            if event in ("start_map", "start_array"):
                keys.append(set())
                if len(keys) > limit:
                    raise ReaderError(too_deep(len(keys)))
    except ijson.JSONError as exc:
        raise invalid(exc) from exc
    return out


_KINDS = {"start_array": "list", "start_map": "map", "string": "string"}


def plan(found: Survey) -> tuple[str, str]:
    """(how to read the object, the wrapper key for ``ITEMS``): ``WHOLE`` for a single example, a
    ``facts`` list or a repeated key; ``ITEMS`` for a wrapper's list; ``TEXT`` for a
    document holding no examples."""
    if found.repeated or found.kinds.get("facts") == "list" or found.turns:
        return WHOLE, ""
    keys = list(found.kinds)
    lower = {key.strip().lower() for key in keys}
    if any(shape <= lower for shape in _REASONING) or find_qa_keys(keys):
        return WHOLE, ""  # one example: one record, read whole
    wrapper = next((key for key in WRAPPER_KEYS if found.kinds.get(key) == "list"), "")
    return (ITEMS, wrapper) if wrapper else (TEXT, "")


def items(handle: Bytes, key: str) -> Iterator[Any]:
    """The values of the top-level ``key``'s list, built one at a time.

    Raises:
        ReaderError: invalid JSON.
    """
    import ijson

    try:
        yield from ijson.items(handle, f"{key}.item", use_float=True)
    except ijson.JSONError as exc:
        raise invalid(exc) from exc


def document_strings(handle: Bytes) -> Iterator[str]:
    """The document's non-blank string values in order, joined by newlines, in pieces of at most
    one segment (a long string is sliced, never copied whole)."""
    import ijson

    segment, first = current().segment, True
    try:
        for event, value in ijson.basic_parse(handle, use_float=True):
            if event != "string" or not value or value.isspace():  # isspace: no stripped copy
                continue
            if not first:
                yield "\n"
            first = False
            for start in range(0, len(value), segment):
                yield value[start : start + segment]
    except ijson.JSONError as exc:
        raise invalid(exc) from exc


_QUOTE_OR_ESCAPE = re.compile(rb'["\\]')


def check_strings(handle: Bytes, limit: int) -> None:
    """Refuse a JSON string longer than ``limit`` bytes (as written in the file, escapes included)
    by scanning the bytes: a parser would build the whole string first.

    Raises:
        ReaderError: the first such string, named with ``max_record_mb``.
    """
    inside, escaped, start, offset = False, False, 0, 0
    for block in iter(lambda: handle.read(current().segment), b""):
        pos, escaped = (1, False) if escaped else (0, False)
        while True:
            if not inside:
                quote = block.find(b'"', pos)
                if quote < 0:
                    break
                inside, start, pos = True, offset + quote + 1, quote + 1
                continue
            match = _QUOTE_OR_ESCAPE.search(block, pos)
            if match is None:
                break
            if match.group() == b"\\":
                escaped = match.end() == len(block)  # the escaped byte starts the next block
                pos = match.end() + 1
                continue
            inside, pos = False, match.end()
            _refuse_over(offset + match.start() - start, limit)
        offset += len(block)
        if inside:
            _refuse_over(offset - start, limit)  # before the rest of a huge string is read


def _refuse_over(length: int, limit: int) -> None:
    if length > limit:
        raise ReaderError(too_long("a JSON string", length))
