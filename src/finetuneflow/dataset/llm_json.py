"""Getting JSON out of small local models.

A 1-3B model asked for JSON answers with *almost* JSON: wrapped in a Markdown fence, introduced by a
sentence, with trailing commas, Python literals or single quotes, raw newlines inside strings, or cut off
when it ran out of tokens. :func:`parse_llm_json` tries the cheap thing first (``json.loads``) and only
then a tolerant scanner of our own, and says which repairs it needed, so callers can count them.

Truncation rule: the cut propagates up to the *outermost array* on the path to it, and that array's
incomplete element is dropped (a half-written record is worse than none); above that array, containers
are closed with what they hold. With no array on the path, the innermost cut member is dropped.
A number at the very end may itself be cut (``12`` of ``125``), so it counts as incomplete.
"""

from __future__ import annotations

import json
import re
from typing import Any

from finetuneflow.errors import LLMJSONError

__all__ = ["LLMJSONError", "parse_llm_json"]

# Repair names, in the order a caller would care about them.
FENCE = "code fence"
LEADING_PROSE = "leading prose"
TRAILING_PROSE = "trailing prose"
TRAILING_COMMA = "trailing comma"
SINGLE_QUOTES = "single quotes"
PYTHON_LITERALS = "python literals"
TRUNCATED = "truncated"
UNESCAPED_NEWLINE = "unescaped newline"
UNESCAPED_QUOTE = "unescaped quote"
INVALID_ESCAPE = "invalid escape"

_FENCE_RE = re.compile(r"```[ \t]*(?:json5?|JSON|javascript|js)?[ \t]*\r?\n?(.*?)(?:```|\Z)", re.DOTALL)
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_CUT_NUMBER_TAIL = re.compile(r"(?:\.|[eE][+-]?)?")
_WORD_RE = re.compile(r"[A-Za-z_]+")
_WORDS: dict[str, tuple[Any, bool]] = {  # word -> (value, is a Python spelling)
    "true": (True, False),
    "false": (False, False),
    "null": (None, False),
    "True": (True, True),
    "False": (False, True),
    "None": (None, True),
}
_ESCAPES = set('"\\/bfnrtu')
_CLOSERS = set(",:}]")
_WS = " \t\r\n"
_MAX_DEPTH = 200
_MAX_STARTS = 50  # candidate start positions tried in prose
_MISSING: Any = object()  # "no value here": the output ended before one began


class _Scanner:
    """A tolerant recursive-descent JSON reader that notes every repair it makes."""

    def __init__(self, text: str, pos: int) -> None:
        self.text = text
        self.pos = pos
        self.repairs: list[str] = []
        self.depth = 0

    # -- helpers -------------------------------------------------------------------------------------
    def note(self, repair: str) -> None:
        if repair not in self.repairs:
            self.repairs.append(repair)

    def fail(self, what: str) -> LLMJSONError:
        line = self.text.count("\n", 0, self.pos) + 1
        col = self.pos - (self.text.rfind("\n", 0, self.pos) + 1) + 1
        return LLMJSONError(f"{what} at line {line} column {col}")

    def skip_ws(self) -> bool:
        """Skip whitespace; False at the end of the text."""
        n = len(self.text)
        while self.pos < n and self.text[self.pos] in _WS:
            self.pos += 1
        return self.pos < n

    def next_significant(self, pos: int) -> str:
        """The first non-whitespace character at or after ``pos`` ('' at the end)."""
        while pos < len(self.text) and self.text[pos] in _WS:
            pos += 1
        return self.text[pos] if pos < len(self.text) else ""

    # -- values --------------------------------------------------------------------------------------
    def value(self, in_array: bool) -> tuple[Any, bool]:
        """(value, complete). ``complete`` is False when the text ended inside it."""
        if not self.skip_ws():
            return _MISSING, False
        c = self.text[self.pos]
        if c in "{[":
            self.depth += 1
            if self.depth > _MAX_DEPTH:
                raise self.fail("nested too deeply")
            result = self.obj(in_array) if c == "{" else self.array(in_array)
            self.depth -= 1
            return result
        if c in "\"'":
            return self.string()
        if c == "-" or c.isdigit():
            return self.number()
        if c.isalpha() or c == "_":
            return self.word()
        raise self.fail(f"unexpected character {c!r}")

    def array(self, in_array: bool) -> tuple[list[Any], bool]:
        self.pos += 1  # '['
        items: list[Any] = []
        after_comma = False
        while True:
            if not self.skip_ws():
                return items, False
            if self.text[self.pos] == "]":
                if after_comma:
                    self.note(TRAILING_COMMA)
                self.pos += 1
                return items, True
            item, done = self.value(in_array=True)
            if not done:
                # The outermost array drops its cut element; an inner one is dropped whole by it anyway.
                return items, False
            items.append(item)
            if not self.skip_ws():
                return items, False
            c = self.text[self.pos]
            if c == "]":
                self.pos += 1
                return items, True
            if c != ",":
                raise self.fail("expected ',' or ']'")
            self.pos += 1
            after_comma = True

    def obj(self, in_array: bool) -> tuple[dict[str, Any], bool]:
        self.pos += 1  # '{'
        out: dict[str, Any] = {}
        after_comma = False
        while True:
            if not self.skip_ws():
                return out, False
            c = self.text[self.pos]
            if c == "}":
                if after_comma:
                    self.note(TRAILING_COMMA)
                self.pos += 1
                return out, True
            if c not in "\"'":
                raise self.fail("expected a quoted key")
            key, closed = self.string()
            if not closed or not self.skip_ws():
                return out, False
            if self.text[self.pos] != ":":
                raise self.fail("expected ':' after a key")
            self.pos += 1
            val, done = self.value(in_array)
            if not done:
                if isinstance(val, dict | list):  # the cut is deeper down: keep what the child closed
                    out[key] = val
                return out, False
            out[key] = val
            if not self.skip_ws():
                return out, False
            c = self.text[self.pos]
            if c == "}":
                self.pos += 1
                return out, True
            if c != ",":
                raise self.fail("expected ',' or '}'")
            self.pos += 1
            after_comma = True

    def string(self) -> tuple[str, bool]:
        """A double- or single-quoted string, re-escaped into a JSON literal and decoded by ``json``."""
        quote = self.text[self.pos]
        if quote == "'":
            self.note(SINGLE_QUOTES)
        self.pos += 1
        body: list[str] = []
        n = len(self.text)
        while self.pos < n:
            c = self.text[self.pos]
            if c == "\\":
                if not self.escape(body, quote):
                    return _decode(body), False
                continue
            if c == quote:
                if self.closes_string(self.pos + 1):
                    self.pos += 1
                    return _decode(body), True
                # An apostrophe ('don't') or an unescaped inner quote ("say "hi" now").
                if quote == '"':
                    self.note(UNESCAPED_QUOTE)
                body.append('\\"' if c == '"' else c)
            elif c == '"':
                body.append('\\"')
            elif c < " ":
                self.note(UNESCAPED_NEWLINE)
                body.append(json.dumps(c)[1:-1])
            else:
                body.append(c)
            self.pos += 1
        return _decode(body), False

    def closes_string(self, after: int) -> bool:
        """A quote ends its string only if what follows can follow a string."""
        nxt = self.next_significant(after)
        return nxt == "" or nxt in _CLOSERS

    def escape(self, body: list[str], quote: str) -> bool:
        """Copy the escape at ``pos`` into ``body``; False when the text ends inside it."""
        text, pos = self.text, self.pos
        if pos + 1 >= len(text):
            self.pos = len(text)
            return False
        e = text[pos + 1]
        if e == "u":
            digits = text[pos + 2 : pos + 6]
            if len(digits) < 4 and pos + 2 + len(digits) == len(text):
                self.pos = len(text)
                return False
            if re.fullmatch(r"[0-9a-fA-F]{4}", digits):
                body.append("\\u" + digits)
                self.pos = pos + 6
                return True
        elif e in _ESCAPES:
            body.append("\\" + e)
            self.pos = pos + 2
            return True
        elif e == "'":  # legal in a Python string, not in JSON
            if quote == '"':
                self.note(INVALID_ESCAPE)
            body.append("'")
            self.pos = pos + 2
            return True
        self.note(INVALID_ESCAPE)  # keep the backslash as a character
        body.append("\\\\")
        self.pos = pos + 1
        return True

    def number(self) -> tuple[Any, bool]:
        m = _NUMBER_RE.match(self.text, self.pos)
        if m is None:
            if self.text[self.pos :] == "-":
                self.pos = len(self.text)
                return _MISSING, False
            raise self.fail("malformed number")
        self.pos = m.end()
        # A number at the very end may have been cut (12 of 125); so was one ending in '.', 'e' or 'e-'.
        if _CUT_NUMBER_TAIL.fullmatch(self.text, self.pos):
            self.pos = len(self.text)
            return _MISSING, False
        text = m.group()
        try:
            return json.loads(text), True
        except ValueError:  # a leading zero ("01"): not JSON, but a plain number all the same
            return (float(text) if any(c in text for c in ".eE") else int(text)), True

    def word(self) -> tuple[Any, bool]:
        m = _WORD_RE.match(self.text, self.pos)
        assert m is not None  # value() saw a letter or '_'
        word = m.group()
        self.pos = m.end()
        if word in _WORDS:
            value, pythonic = _WORDS[word]
            if pythonic:
                self.note(PYTHON_LITERALS)
            return value, True
        if self.pos == len(self.text) and any(w.startswith(word) for w in _WORDS):
            return _MISSING, False  # 'tru' at the very end
        self.pos = m.start()
        raise self.fail(f"unexpected word {word!r}")


def _decode(body: list[str]) -> str:
    decoded: str = json.loads('"' + "".join(body) + '"')
    return decoded


def _scan(text: str, start: int) -> tuple[Any, int, list[str]]:
    """Parse one value at ``start``: (value, end position, repairs)."""
    scanner = _Scanner(text, start)
    value, complete = scanner.value(in_array=False)
    if not complete:
        if not isinstance(value, dict | list):
            raise LLMJSONError("the output was cut off before any complete value")
        scanner.note(TRUNCATED)
    return value, scanner.pos, scanner.repairs


def _starts(text: str) -> list[int]:
    """Where a JSON value may begin: the start itself if it looks like one, then every '{' and '['."""
    starts = [i for i, c in enumerate(text) if c in "{["][:_MAX_STARTS]
    head = text.lstrip()
    begin = len(text) - len(head)
    word = _WORD_RE.match(head)
    first = head[:1]
    looks_scalar = (
        first in ('"', "'", "-") or first.isdigit() or (word is not None and word.group() in _WORDS)
    )
    if looks_scalar and begin not in starts:
        starts.insert(0, begin)
    return starts


def _tolerant(text: str) -> tuple[Any, list[str]]:
    """The longest value any candidate start yields, with the prose around it noted as repairs."""
    best: tuple[Any, int, int, list[str]] | None = None
    first_error: LLMJSONError | None = None
    covered = -1
    for start in _starts(text):
        if start < covered:  # inside a value already found
            continue
        try:
            value, end, repairs = _scan(text, start)
        except LLMJSONError as exc:
            first_error = first_error or exc
            continue
        covered = end
        if best is None or end - start > best[2] - best[1]:
            best = (value, start, end, repairs)
    if best is None:
        if first_error is not None:
            raise first_error
        raise LLMJSONError("no JSON object or array in the output")
    value, start, end, repairs = best
    prose: list[str] = []
    if text[:start].strip():
        prose.append(LEADING_PROSE)
    if text[end:].strip():
        prose.append(TRAILING_PROSE)
    return value, prose + repairs


def parse_llm_json(text: str) -> tuple[Any, list[str]]:
    """Parse a model's JSON answer, repairing what small models commonly get wrong.

    Returns ``(value, repairs)``; ``repairs`` is empty when the text was valid JSON, otherwise it names
    each repair applied ('code fence', 'leading prose', 'trailing prose', 'trailing comma', 'single quotes',
    'python literals', 'truncated', 'unescaped newline', 'unescaped quote', 'invalid escape').

    Raises:
        LLMJSONError: nothing JSON-like could be recovered; ``reason`` says why.
    """
    if not text.strip():
        raise LLMJSONError("the output is empty")
    try:
        return json.loads(text), []
    except ValueError:
        pass
    fence = _FENCE_RE.search(text)
    if fence is None:
        return _tolerant(text)
    body = fence.group(1)
    if not body.strip():
        raise LLMJSONError("the code fence is empty")
    try:
        return json.loads(body), [FENCE]
    except ValueError:
        pass
    try:
        value, repairs = _tolerant(body)
        return value, [FENCE, *repairs]
    except LLMJSONError as exc:
        try:  # the backticks may have been inside a JSON string, not a Markdown fence
            return _tolerant(text)
        except LLMJSONError:
            raise exc from None
