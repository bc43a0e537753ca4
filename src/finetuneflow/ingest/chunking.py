"""Split text into chunks that fit a token budget, cutting at natural boundaries.

The text is tokenized once; a :data:`SpanFn` gives the character span of every token, and all
later decisions are bisections over those spans, so chunking is linear in the text length.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from itertools import accumulate
from typing import Any

from finetuneflow.records import Chunk

SpanFn = Callable[[str], list[tuple[int, int]]]
"""Returns the (char_start, char_end) span of every token of the given text, in order."""

MIN_MAX_TOKENS = 16

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

    Raises:
        ValueError: ``max_tokens`` < 16, or ``overlap`` not in ``[0, max_tokens // 2)``.
    """
    _check_args(max_tokens, overlap)
    if not text.strip():
        return []
    token_spans = spans(text)
    if len(token_spans) <= max_tokens:  # the common case of a short document: no walking needed
        whole = _make_chunk_fast(text, token_spans, page)
        return [whole] if whole is not None else []
    starts, ends = _token_bounds(token_spans)
    n = len(starts)
    chunks: list[Chunk] = []
    start = 0
    while n:
        first = bisect_right(ends, start)  # first token that reaches past `start`
        window_end = first + max_tokens
        if window_end >= n:
            end = len(text)
        else:
            # Cutting at or before the start of token `window_end` keeps at most max_tokens tokens.
            end = _best_cut(text, lo=starts[first + max_tokens // 2], hi=starts[window_end])
        chunk = _make_chunk(text, start, end, starts, ends, len(chunks), page)
        if chunk is not None:
            chunks.append(chunk)
        consumed = bisect_left(starts, end)  # tokens that start before `end`
        if consumed >= n:
            break
        next_start = _next_start(text, starts[max(consumed - overlap, first + 1)], end, overlap)
        # Guard against overlapping spans (byte-level tokens sharing one character) stalling the walk.
        start = next_start if next_start > start else end
    return chunks


def _check_args(max_tokens: int, overlap: int) -> None:
    """Raises ValueError naming the bad argument and the fix."""
    if max_tokens < MIN_MAX_TOKENS:
        raise ValueError(f"max_tokens must be at least {MIN_MAX_TOKENS} (got {max_tokens}); raise max_tokens")
    if not 0 <= overlap < max_tokens // 2:
        raise ValueError(
            f"overlap must be >= 0 and < max_tokens // 2 = {max_tokens // 2} (got {overlap}); "
            "lower overlap or raise max_tokens"
        )


def _token_bounds(token_spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Sorted token starts and ends, with ends made non-decreasing so both can be bisected."""
    ordered = sorted(token_spans)
    starts = [s for s, _ in ordered]
    ends = list(accumulate((e for _, e in ordered), max))
    return starts, ends


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
    text: str, start: int, end: int, starts: list[int], ends: list[int], index: int, page: int | None
) -> Chunk | None:
    """The chunk for ``text[start:end]`` with surrounding whitespace trimmed, or None if blank."""
    raw = text[start:end]
    body = raw.strip()
    if not body:
        return None
    char_start = start + (len(raw) - len(raw.lstrip()))
    char_end = char_start + len(body)
    n_tokens = bisect_left(starts, char_end) - bisect_right(ends, char_start)
    return Chunk(body, index, n_tokens, char_start, char_end, page)
