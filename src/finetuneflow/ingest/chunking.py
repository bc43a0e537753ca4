"""Split text into chunks that fit a token budget, cutting at natural boundaries.

The text is tokenized once; a :data:`SpanFn` gives the character span of every token, and all
later decisions are bisections over those spans, so chunking is linear in the text length.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate
from operator import itemgetter
from typing import Any

from finetuneflow.records import Chunk

SpanFn = Callable[[str], list[tuple[int, int]]]
"""Returns the (char_start, char_end) span of every token of the given text, in order."""

MIN_MAX_TOKENS = 16
# Characters tokenized at a time; a longer text slides through windows. The tokenizer is ~2.5x
# slower per character on one 1 MB string than on 64 KB pieces (measured, SmolLM2's BPE).
WINDOW_CHARS = 1 << 16

_PARAGRAPH = re.compile(r"\n[ \t]*\n")
# A sentence ends at . ! or ?, possibly followed by closing quotes/brackets, then whitespace.
_SENTENCE = re.compile(r"[.!?][\"')\]\u2019\u201d]*(?=\s)")
_SPACE = re.compile(r"\s")
_WORD_START = re.compile(r"(?<!\S)\S")


def whitespace_span_fn(text: str) -> list[tuple[int, int]]:
    """Spans of whitespace-separated words: a tokenizer-free stand-in for tests and fallback."""
    return [m.span() for m in re.finditer(r"\S+", text)]


def hf_span_fn(tokenizer: Any) -> SpanFn:
    """Wrap a Hugging Face *fast* tokenizer as a :data:`SpanFn` using its offset mapping.

    Raises:
        ValueError: the tokenizer is not a fast tokenizer (slow ones have no offset mapping).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            "hf_span_fn needs a fast tokenizer (one with offset mappings); "
            "load it with AutoTokenizer.from_pretrained(..., use_fast=True)"
        )

    def spans(text: str) -> list[tuple[int, int]]:
        # verbose=False: documents are longer than the model context on purpose, that is why we chunk.
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return list(encoded["offset_mapping"])

    return spans


def chunk_text(
    text: str,
    spans: SpanFn,
    max_tokens: int = 512,
    overlap: int = 50,
    page: int | None = None,
) -> list[Chunk]:
    """Split ``text`` into chunks of at most ``max_tokens`` tokens (as counted by ``spans``).

    Each chunk ends at the last paragraph break in its window, else the last sentence end, else
    the last whitespace, provided that leaves at least about half a window; otherwise it is cut
    at a token boundary. The next chunk starts ``overlap`` tokens before the previous end, moved
    forward to the start of a word. ``text[c.char_start:c.char_end] == c.text`` for every chunk.
    A long text is tokenized in windows (see :func:`chunk_stream`), with the same result.

    Raises:
        ValueError: ``max_tokens`` < 16, or ``overlap`` not in ``[0, max_tokens // 2)``.
    """
    return list(chunk_stream([text], spans, max_tokens, overlap, page))


def chunk_stream(
    segments: Iterable[str],
    spans: SpanFn,
    max_tokens: int = 512,
    overlap: int = 50,
    page: int | None = None,
    window: int = WINDOW_CHARS,
) -> Iterator[Chunk]:
    """The chunks of ``"".join(segments)`` (exactly those :func:`chunk_text` gives for it), made
    while holding only about ``window`` characters and their tokens at a time.

    Raises:
        ValueError: as :func:`chunk_text`.
    """
    _check_args(max_tokens, overlap)
    win = _Window(iter(segments), spans, max(window, 64 * max_tokens))
    win.fill()
    if win.done and not win.text.strip():
        return
    if win.done and len(win.starts) <= max_tokens:  # a short document: no walking needed
        whole = _make_chunk_fast(win.text, list(zip(win.starts, win.raw_ends, strict=True)), page)
        if whole is not None:
            yield whole
        return
    yield from _walk(win, max_tokens, overlap, page)


def _walk(win: _Window, max_tokens: int, overlap: int, page: int | None) -> Iterator[Chunk]:
    """The chunk walk over a window that slides along the text (offsets are global)."""
    start, index = 0, 0
    while True:
        first = win.ready(start, max_tokens)
        starts, ends, base, text = win.starts, win.ends, win.base, win.text
        n = len(starts)
        if not n:
            return
        window_end = first + max_tokens
        if window_end >= n:  # only when the whole text has been read and tokenized
            end = base + len(text)
        else:
            # Cutting at or before the start of token `window_end` keeps at most max_tokens tokens.
            lo, hi = starts[first + max_tokens // 2] - base, starts[window_end] - base
            end = base + _best_cut(text, lo, hi)
        chunk = _make_chunk(text, base, start, end, starts, ends, index, page)
        if chunk is not None:
            index += 1
            yield chunk
        consumed = bisect_left(starts, end)  # tokens that start before `end`
        if consumed >= n:
            return
        pos = starts[max(consumed - overlap, first + 1)] - base
        next_start = base + _next_start(text, pos, end - base, overlap)
        # Guard against overlapping spans (byte-level tokens sharing one character) stalling the walk.
        start = next_start if next_start > start else end


class _Window:
    """A stretch of the text and the spans of its tokens, global offsets, tokenized in pieces.

    A piece ends where the text after it tokenizes the same alone as in context: after a newline
    (else before a space) that is followed by a visible character, and where a probe tokenization
    from there agrees with the piece's own tokens. Tokens past that point are thrown away and
    computed again with the next piece, so every token is the one the whole text would give.
    """

    def __init__(self, segments: Iterator[str], spans: SpanFn, window: int) -> None:
        self.segments, self.spans, self.window = segments, spans, window
        self.text = ""  # the text from `base` on
        self.base = 0
        self.tokenized = 0  # global offset up to which tokens are known (a safe cut)
        self.starts: list[int] = []
        self.ends: list[int] = []  # running maximum of the token ends: bisectable
        self.raw_ends: list[int] = []  # the ends as given (the short-document count uses them)
        self.read_all = False  # every segment is in `text`
        self.done = False  # ... and tokenized

    def ready(self, start: int, max_tokens: int) -> int:
        """Index of the first token reaching past ``start``, after reading until ``max_tokens`` + 1
        tokens from it on are known (or the text has ended); old text and tokens are dropped."""
        first = bisect_right(self.ends, start)
        if first > 4 * max_tokens and start - self.base > self.window // 2:
            self._drop(first - 1, start)
            first = bisect_right(self.ends, start)
        while not self.done and len(self.starts) - first <= max_tokens + 1:
            self.fill()
            first = bisect_right(self.ends, start)
        return first

    def _drop(self, tokens: int, start: int) -> None:
        # _next_start looks one character behind a token start: keep that character too
        keep_from = max(self.base, min(start - 1, self.starts[tokens] - 1))
        del self.starts[:tokens], self.ends[:tokens], self.raw_ends[:tokens]
        self.text = self.text[keep_from - self.base :]
        self.base = keep_from

    def fill(self) -> None:
        """Tokenize about ``window`` more characters, up to a safe cut in them."""
        at = self.tokenized - self.base
        wanted = self.window
        while True:
            while len(self.text) - at < wanted and not self.read_all:
                segment = next(self.segments, None)
                self.read_all = segment is None
                self.text += segment or ""
            if self.read_all and len(self.text) - at <= wanted:
                piece = self.text[at:]
                self._add(sorted(self.spans(piece)) if piece else [], len(piece))
                self.done = True
                return
            piece = self.text[at : at + wanted]
            found = sorted(self.spans(piece))
            cut = _safe_cut(piece, found, self.spans, self.window // 16)
            if cut is None and wanted < _MAX_GROWTH * self.window:
                wanted *= 2  # a single token so far: read on rather than split it
                continue
            self._add(found, cut or len(piece) - self.window // 16)
            return

    def _add(self, found: list[tuple[int, int]], cut: int) -> None:
        """Keep the tokens of the new piece that start before ``cut`` (offsets in the piece)."""
        shift = self.tokenized
        kept = found[: bisect_left(found, (cut, -1))]
        self.starts += [s + shift for s, _ in kept]
        raw_ends = [e + shift for _, e in kept]
        self.raw_ends += raw_ends
        running = accumulate(raw_ends, max, initial=self.ends[-1] if self.ends else 0)
        next(running)  # the initial value itself
        self.ends += running
        self.tokenized = shift + cut


# After a newline, before a space, after a space; each followed by a visible ASCII character.
_CUT_PATTERNS = tuple(re.compile(p) for p in (r"\n(?=[!-~])", r"(?<=\S)(?= [!-~])", r"(?<=\S )(?=[!-~])"))
_CUT_TRIES = 8  # candidates tried per pattern before the next one
_PROBE = 2048  # characters tokenized alone after a candidate cut to check it
_MAX_GROWTH = 8  # a window without any token boundary grows up to this many times, then is cut


def _safe_cut(piece: str, found: list[tuple[int, int]], spans: SpanFn, margin: int) -> int | None:
    """Where to stop keeping the tokens of ``piece`` (sorted spans ``found``): a place at least
    ``margin`` characters before its end where tokenizing the rest alone gives the same tokens;
    None when the piece is one token."""
    limit = len(piece) - margin
    # Candidates lie in the second half of the piece: only its tokens are indexed.
    first = bisect_left(found, (limit // 2 - 1, -1))
    tail = found[first:]
    starts = list(map(itemgetter(0), tail))
    before = max(map(itemgetter(1), found[:first]), default=0)
    reach = list(accumulate(map(itemgetter(1), tail), max, initial=before))  # [k]: furthest end before k
    for pattern in _CUT_PATTERNS:
        candidates = [m.end() for m in pattern.finditer(piece, max(1, limit // 2), limit)]
        for cut in reversed(candidates[-_CUT_TRIES:]):
            k = bisect_left(starts, cut)
            if (
                k < len(starts)
                and starts[k] == cut
                and reach[k] <= cut
                and _agrees(piece, cut, tail[k:], spans)
            ):
                return cut
    # No safe place in the whole piece (a stretch without spaces): cut between two tokens.
    k = min(bisect_left(starts, limit), len(starts) - 1)
    while k > 0 and reach[k] > starts[k]:
        k -= 1
    return starts[k] if 0 <= k < len(starts) and 0 < starts[k] <= limit and reach[k] <= starts[k] else None


def _agrees(piece: str, cut: int, after: list[tuple[int, int]], spans: SpanFn) -> bool:
    """Whether tokenizing from ``cut`` alone gives the same first tokens as ``after``, the tokens of
    the whole piece from there on."""
    probe = sorted(spans(piece[cut : cut + _PROBE]))
    if cut + _PROBE >= len(piece):  # the probe reaches the end of the piece: all tokens must agree
        return probe == [(s - cut, e - cut) for s, e in after]
    inside = [(s - cut, e - cut) for s, e in after[: len(probe)] if e - cut <= _PROBE // 2]
    return bool(inside) and probe[: len(inside)] == inside


def _check_args(max_tokens: int, overlap: int) -> None:
    """Raises ValueError naming the bad argument and the fix."""
    if max_tokens < MIN_MAX_TOKENS:
        raise ValueError(f"max_tokens must be at least {MIN_MAX_TOKENS} (got {max_tokens}); raise max_tokens")
    if not 0 <= overlap < max_tokens // 2:
        raise ValueError(
            f"overlap must be >= 0 and < max_tokens // 2 = {max_tokens // 2} (got {overlap}); "
            "lower overlap or raise max_tokens"
        )


def _best_cut(text: str, lo: int, hi: int) -> int:
    """The char offset in ``[lo, hi]`` to end a chunk at: paragraph, sentence, space, else ``hi``."""
    stop = min(hi + 1, len(text))  # one past hi so a sentence end at hi can see its following space
    for pattern, use_end in ((_PARAGRAPH, False), (_SENTENCE, True), (_SPACE, False)):
        best = None
        for match in pattern.finditer(text, lo, stop):
            pos = match.end() if use_end else match.start()
            if lo <= pos <= hi:
                best = pos
        if best is not None and best > 0:
            return best
    return hi


def _next_start(text: str, pos: int, prev_end: int, overlap: int) -> int:
    """Where the next chunk starts: ``pos`` moved forward to a word start, never past ``prev_end``."""
    if overlap == 0 or pos >= prev_end:
        return prev_end
    match = _WORD_START.search(text, pos)
    if match is None or match.start() >= prev_end:
        return prev_end
    return match.start()


def _make_chunk_fast(text: str, token_spans: list[tuple[int, int]], page: int | None) -> Chunk | None:
    """The whole (trimmed) text as one chunk; tokens counted as those overlapping the trimmed body."""
    body = text.strip()
    if not body:
        return None
    char_start = len(text) - len(text.lstrip())
    char_end = char_start + len(body)
    n_tokens = sum(1 for s, e in token_spans if e > char_start and s < char_end)
    return Chunk(body, 0, n_tokens, char_start, char_end, page)


def _make_chunk(
    text: str,
    base: int,
    start: int,
    end: int,
    starts: list[int],
    ends: list[int],
    index: int,
    page: int | None,
) -> Chunk | None:
    """The chunk for ``text[start - base:end - base]`` (``text`` starts at global offset ``base``) with
    surrounding whitespace trimmed, or None if blank."""
    raw = text[start - base : end - base]
    body = raw.strip()
    if not body:
        return None
    char_start = start + (len(raw) - len(raw.lstrip()))
    char_end = char_start + len(body)
    n_tokens = bisect_left(starts, char_end) - bisect_right(ends, char_start)
    return Chunk(body, index, n_tokens, char_start, char_end, page)
