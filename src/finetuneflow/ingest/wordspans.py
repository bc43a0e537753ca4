"""Token spans of GPT-2-style byte-level BPE tokenizers, computed word by word with a cache.

A byte-level BPE tokenizer (no normalizer, a ``ByteLevel`` pre-tokenizer with its regex and no
prefix space) splits text into words with one regex and runs BPE on each word alone, so a word's
tokens do not depend on its neighbours. Prose repeats its words, so splitting in Python and
encoding each distinct word once (then remembering it) gives the same spans as
``Tokenizer.encode(text).offsets`` at a third of the CPU time or less: the Rust pre-tokenizer and
the per-token ``Encoding`` objects, not BPE, were most of the cost.

Only ASCII text takes this path, where the word regex below equals the tokenizer's (``\\p{L}`` is
``[A-Za-z]``, ``\\s`` the six ASCII White_Space characters); text with other characters, or with
an added (special) token in it, is encoded whole as before. ``tests/ingest/test_wordspans.py``
compares both on varied text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from finetuneflow.ingest.chunking import SpanFn

_WS = r"\t\n\x0b\x0c\r "
# The ByteLevel pre-tokenizer's regex, 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|
# \s+(?!\S)|\s+, restricted to ASCII.
_WORDS = re.compile(
    rf"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^{_WS}A-Za-z0-9]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+"
)
_CACHE_WORDS = 200_000  # distinct words remembered (~40 MB); the cache starts over past it


def is_plain_byte_level(spec: dict[str, Any]) -> bool:
    """Whether a ``tokenizer.json`` describes a tokenizer whose words tokenize alone (see above)."""
    pre = spec.get("pre_tokenizer") or {}
    model = spec.get("model") or {}
    return (
        spec.get("normalizer") is None
        and pre.get("type") == "ByteLevel"
        and pre.get("use_regex") is True
        and pre.get("add_prefix_space") is False
        and model.get("type") == "BPE"
        and model.get("dropout") in (None, 0, 0.0)
        and not model.get("continuing_subword_prefix")
        and not model.get("end_of_word_suffix")
    )


def word_span_fn(tok: Any, tokenizer_file: Path) -> SpanFn | None:
    """A :data:`~finetuneflow.ingest.chunking.SpanFn` equal to ``tok.encode(text).offsets`` for
    the ``tokenizers.Tokenizer`` ``tok`` loaded from ``tokenizer_file``; None when its kind of
    tokenizer does not allow it."""
    spec = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    if not is_plain_byte_level(spec):
        return None
    specials = [t["content"] for t in spec.get("added_tokens", []) if t.get("content")]
    special = re.compile("|".join(map(re.escape, specials))) if specials else None
    cache: dict[str, list[tuple[int, int]]] = {}

    def whole(text: str) -> list[tuple[int, int]]:
        return tok.encode(text, add_special_tokens=False).offsets  # type: ignore[no-any-return]

    def spans(text: str) -> list[tuple[int, int]]:
        if not text.isascii() or (special is not None and special.search(text)):
            return whole(text)
        words = _WORDS.findall(text)
        new = [w for w in set(words) if w not in cache]
        if new:
            if len(cache) + len(new) > _CACHE_WORDS:
                cache.clear()
                new = list(set(words))
            encoded = tok.encode_batch(new, add_special_tokens=False)
            cache.update(zip(new, (e.offsets for e in encoded), strict=True))
        out: list[tuple[int, int]] = []
        pos = 0
        for word in words:
            offsets = cache[word]
            if len(offsets) == 1:  # one token: the whole word
                out.append((pos, pos + len(word)))
            else:
                out += [(pos + s, pos + e) for s, e in offsets]
            pos += len(word)
        return out if pos == len(text) else whole(text)  # every character in a word: checked, not assumed

    return spans
