"""The word-cached spans equal the tokenizer's own offsets, and chunks made with them equal."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from finetuneflow.ingest.chunking import chunk_text
from finetuneflow.ingest.wordspans import is_plain_byte_level, word_span_fn

_PIECES = [
    "the",
    " the",
    "The",
    "don't",
    "it's",
    "'s",
    "'ll",
    "I'M",
    " 42",
    "3.14",
    "\n",
    "\n\n",
    "  ",
    "\t",
    " \n ",
    "\r\n",
    "\x0b",
    "\x0c",
    "\x1c",
    "...",
    " --",
    "#",
    "## Part 3",
    "<b>",
    "<|im_start|>",
    "<|endoftext|>",
    "caf\u00e9",
    "na\u00efve",
    "\u201cquoted\u201d",
    "\u4e2d\u6587",
    "emoji \U0001f600",
    "x" * 300,
    " " * 40,
    "http://example.com/a?b=c&d=e",
    "snake_case_name",
    "CamelCaseWord",
    "'tis",
]
_ASCII = [p for p in _PIECES if p.isascii() and "<|" not in p]


def _texts() -> list[str]:
    rng = random.Random(7)
    texts = ["", " ", "a", "\n", "word", "  leading", "trailing  ", "it's  two\n\n  spaces"]
    for n in (5, 50, 500, 5000):
        for k in range(30):
            pieces = _PIECES if k % 3 == 0 else _ASCII  # two thirds on the fast path
            texts.append("".join(rng.choice(pieces) + rng.choice(["", " ", "  ", "\n"]) for _ in range(n)))
    ascii_only = [t for t in texts if t.isascii() and "<|" not in t]
    assert len(ascii_only) > 40  # the fast path itself is exercised, not only the fallback
    return texts


@pytest.fixture(scope="module")
def tokenizer_file(default_model_cache: Path) -> Path:
    return default_model_cache / "tokenizer.json"


def test_spans_equal_the_tokenizer_offsets(tokenizer_file: Path) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_truncation()
    spans = word_span_fn(tok, tokenizer_file)
    assert spans is not None
    for text in _texts():
        assert spans(text) == tok.encode(text, add_special_tokens=False).offsets, repr(text[:80])


def test_chunks_equal_with_either_span_function(tokenizer_file: Path) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_truncation()
    fast = word_span_fn(tok, tokenizer_file)
    assert fast is not None
    text = "\n\n".join(_texts()[-30:])
    plain = chunk_text(text, lambda t: tok.encode(t, add_special_tokens=False).offsets, 64, 8)
    assert chunk_text(text, fast, 64, 8) == plain
    assert len(plain) > 10


def test_other_tokenizers_keep_the_plain_path() -> None:
    spec = {"normalizer": None, "model": {"type": "BPE"}}
    byte_level = {"type": "ByteLevel", "use_regex": True, "add_prefix_space": False}
    assert is_plain_byte_level({**spec, "pre_tokenizer": byte_level})
    assert not is_plain_byte_level({**spec, "pre_tokenizer": {**byte_level, "add_prefix_space": True}})
    assert not is_plain_byte_level({**spec, "pre_tokenizer": {"type": "Metaspace"}})
    nfc = {"normalizer": {"type": "NFC"}, "model": {"type": "BPE"}}
    assert not is_plain_byte_level({**nfc, "pre_tokenizer": byte_level})
