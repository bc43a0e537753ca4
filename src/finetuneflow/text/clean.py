"""Turning file bytes into clean text: decoding and normalisation, applied by the readers."""

from __future__ import annotations

import codecs
import re
import unicodedata

from finetuneflow.errors import ReaderError

# Every line-break convention we meet in the wild (Windows, old Mac, form feeds from PDF page
# breaks, Unicode line/paragraph separators) becomes "\n" so later steps only see one kind.
_LINE_BREAKS = re.compile("\r\n|[\r\v\f\x85\u2028\u2029]")
# C0 and C1 control characters except "\t" and "\n": NULs and escape codes from bad
# exports confuse tokenizers and show up as garbage in the UI.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Lone UTF-16 surrogates: JSON's "\ud83d" escape without its pair (a chat export cut mid-emoji)
# decodes to a str no tokenizer, database or UTF-8 file accepts; each becomes U+FFFD.
_SURROGATE = re.compile("[\ud800-\udfff]")
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)
# Three or more newlines means two or more blank lines; one blank line is enough to mark a paragraph.
_BLANK_RUN = re.compile(r"\n{3,}")
_CP1252_LETTERS = frozenset("ŒœŠšŽžŸ")
_CP1252_SYMBOLS = frozenset("\xa0€‘’‚“”„–—…•°«»©®™§£¡¿·ªº")
_SYMBOL_IN_WORD = re.compile(r"[^\W\d_][¡¿£§°·«»©®][^\W\d_]")

# UTF-8 text with a few bytes that are not UTF-8 (a Windows editor's quote pasted in, a line from a
# cp1252 file appended) is read as UTF-8 with those bytes as cp1252: reading all of it as cp1252
# turned every UTF-8 accent into two letters ("é" became "Ã©"). MIXED is the encoding reported.
STRAY_BYTES = "finetuneflow.stray-cp1252"
MIXED = "utf-8+cp1252"


def clean_text(text: str) -> str:
    """Normalise document text: NFKC, one line-ending style, no control characters.

    Trailing spaces are removed from every line, runs of blank lines become a single blank
    line (so paragraph breaks survive), and the result is stripped. Never raises.
    """
    return clean_segment(text).strip()


def clean_segment(text: str) -> str:
    """:func:`clean_text` without the final strip: for a text read in pieces cut at a
    :data:`SAFE_CUT`, the cleaned pieces joined and stripped equal the whole text cleaned."""
    text = unicodedata.normalize("NFKC", _SURROGATE.sub("\ufffd", text))
    text = _LINE_BREAKS.sub("\n", text)
    text = _CONTROL.sub("", text)
    text = _TRAILING_SPACE.sub("", text)
    return _BLANK_RUN.sub("\n\n", text)


SAFE_CUT = re.compile(r"\n(?=[!-~\w])|(?<=[!-~])(?=[!-~])")
"""Places where text may be cut before cleaning without changing the result: after a newline
followed by a visible character, or between two visible ASCII characters (no normalisation
composes across them, no line break, trailing space or blank run spans them)."""


def clean_message(text: str) -> str:
    """Lightly clean a chat message: NFKC, control characters removed, surrounding space stripped.

    Line structure inside the message is kept as written (code blocks and lists depend on it),
    except that line endings are normalised to "\\n". Never raises.
    """
    text = unicodedata.normalize("NFKC", _SURROGATE.sub("\ufffd", text))
    text = _LINE_BREAKS.sub("\n", text)
    return _CONTROL.sub("", text).strip()


def decode_bytes(data: bytes) -> tuple[str, str]:
    """Decode file bytes as UTF-8 (BOM allowed), UTF-8 with stray cp1252 bytes (:data:`MIXED`), else
    the detected encoding; returns (text, encoding).

    Raises:
        ReaderError: the bytes look binary (NUL bytes without a UTF-16 byte-order mark).
    """
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as exc:
            raise ReaderError(f"damaged UTF-16 text ({exc.reason}); save it again as UTF-8") from exc
    if b"\x00" in data[:8192]:
        raise ReaderError("this looks like a binary file, not text; check the file type")
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    if _mostly_utf8(data):
        return data.decode("utf-8-sig", STRAY_BYTES), MIXED
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        text = ""
    if text and _plausible_western(text):
        return text, "cp1252"
    for encoding in (_detect_encoding(data), "cp1252"):
        if encoding:
            try:
                return data.decode(encoding), encoding
            except (UnicodeDecodeError, LookupError):
                continue
    return data.decode("latin-1"), "latin-1"  # latin-1 maps every byte, so this cannot fail


def _mostly_utf8(data: bytes) -> bool:
    """True if ``data`` is UTF-8 text with a few stray bytes that are not: more of its non-ASCII
    characters decode as UTF-8 than fail to. A cp1252 or Latin-1 file fails at nearly every
    accented letter (one followed by ASCII is never valid UTF-8), so it has almost no valid ones."""
    text = data.decode("utf-8", "replace")
    strays = text.count("\ufffd") - data.count("\ufffd".encode())
    non_ascii = len(text) - len(text.encode("ascii", "ignore"))
    return non_ascii - strays > strays


def _stray_as_cp1252(exc: UnicodeError) -> tuple[str, int]:
    """Decoding error handler: bytes that are not UTF-8 read as cp1252 (a Windows quote or accent
    pasted into UTF-8 text), U+FFFD where cp1252 has no character."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return exc.object[exc.start : exc.end].decode("cp1252", "replace"), exc.end


codecs.register_error(STRAY_BYTES, _stray_as_cp1252)


def _plausible_western(text: str) -> bool:
    """True if ``text`` (bytes decoded as cp1252) reads like ordinary Latin-script text.

    charset_normalizer often misreads short Western European text (cp1252 "crème" comes back as
    cp1250 "crčme"), and cp1252 is the legacy encoding most of our users have, so it wins when
    every non-ASCII character is a Latin-1 letter or common punctuation, accented letters are a
    minority (Cyrillic read as cp1252 is all accented letters), and no symbol sits inside a word
    (Polish "ż" read as cp1252 is "¿").
    """
    letters = accented = 0
    for char in text:
        if char.isascii():
            letters += char.isalpha()
        elif char.isalpha() and ("\xc0" <= char <= "\xff" or char in _CP1252_LETTERS):
            letters += 1
            accented += 1
        elif char not in _CP1252_SYMBOLS:
            return False
    return accented * 3 <= letters and not _SYMBOL_IN_WORD.search(text)


def _detect_encoding(data: bytes) -> str | None:
    """charset_normalizer's best guess, or None when it is not installed or has no guess."""
    try:
        from charset_normalizer import from_bytes
    except ImportError:
        return None
    best = from_bytes(data).best()
    return None if best is None else str(best.encoding)
