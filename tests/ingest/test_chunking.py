"""Chunking: invariants over many texts and settings, boundary preferences, real HF offsets."""

from __future__ import annotations

import random
import re
from bisect import bisect_left
from typing import Any

import pytest

from finetuneflow.ingest.chunking import SpanFn, chunk_text, hf_span_fn, whitespace_span_fn
from finetuneflow.records import Chunk

WORD_START = re.compile(r"(?<!\S)\S")
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
    "pi",
    "rho",
]


def char_span_fn(text: str) -> list[tuple[int, int]]:
    """One token per non-space character: lets a single long word exceed the window."""
    return [(i, i + 1) for i, char in enumerate(text) if not char.isspace()]


def make_text(seed: int, paragraphs: int, sentences: int, words: int) -> str:
    rng = random.Random(seed)
    paras = []
    for _ in range(paragraphs):
        sents = [
            " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "." for _ in range(sentences)
        ]
        paras.append(" ".join(sents))
    return "\n\n".join(paras)


TEXTS = {
    "paragraphs": make_text(1, paragraphs=12, sentences=4, words=9),
    "one_paragraph": make_text(2, paragraphs=1, sentences=40, words=7),
    "no_punctuation": " ".join(random.Random(3).choice(WORDS) for _ in range(900)),
    "messy_spacing": "  \n"
    + make_text(4, paragraphs=5, sentences=3, words=11).replace(". ", ".  \t")
    + "\n\n  ",
    "single_huge_word": "x" * 700,
}
CASES = [
    (name, fn, max_tokens, overlap)
    for name in TEXTS
    for fn in (whitespace_span_fn, char_span_fn)
    for max_tokens, overlap in ((16, 0), (16, 7), (64, 10), (100, 0), (512, 50))
]


def check_invariants(text: str, chunks: list[Chunk], spans: SpanFn, max_tokens: int, overlap: int) -> None:
    assert chunks, "non-blank text must give at least one chunk"
    covered = [False] * len(text)
    for i, chunk in enumerate(chunks):
        assert chunk.index == i
        assert text[chunk.char_start : chunk.char_end] == chunk.text
        assert chunk.text and chunk.text == chunk.text.strip()
        assert chunk.n_tokens == len(spans(chunk.text)) <= max_tokens
        covered[chunk.char_start : chunk.char_end] = [True] * (chunk.char_end - chunk.char_start)
    assert all(covered[i] for i, char in enumerate(text) if not char.isspace()), "text not fully covered"
    token_starts = [start for start, _ in spans(text)]
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        assert prev.char_start < nxt.char_start and prev.char_end < nxt.char_end, "chunks out of order"
        # The next chunk starts `overlap` tokens back, moved forward to a word start if one is there.
        back = token_starts[max(bisect_left(token_starts, prev.char_end) - overlap, 0)]
        if overlap and WORD_START.search(text, back, prev.char_end):
            assert back <= nxt.char_start < prev.char_end, "overlap requested but chunks do not overlap"
        else:
            assert nxt.char_start >= prev.char_end


@pytest.mark.parametrize(("name", "spans", "max_tokens", "overlap"), CASES)
def test_invariants(name: str, spans: SpanFn, max_tokens: int, overlap: int) -> None:
    text = TEXTS[name]
    chunks = chunk_text(text, spans, max_tokens=max_tokens, overlap=overlap, page=3)
    check_invariants(text, chunks, spans, max_tokens, overlap)
    assert {c.page for c in chunks} == {3}


def test_short_text_is_one_chunk() -> None:
    chunks = chunk_text("  Hello there, world.  ", whitespace_span_fn, max_tokens=16, overlap=4)
    assert [(c.text, c.n_tokens, c.char_start, c.char_end) for c in chunks] == [
        ("Hello there, world.", 3, 2, 21)
    ]


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t \n"])
def test_blank_text_gives_no_chunks(text: str) -> None:
    assert chunk_text(text, whitespace_span_fn) == []


def test_prefers_paragraph_breaks() -> None:
    text = TEXTS["paragraphs"]  # paragraphs of 36 words; a 64-token window always holds one break
    chunks = chunk_text(text, whitespace_span_fn, max_tokens=64, overlap=0)
    assert len(chunks) > 3
    for chunk in chunks[:-1]:
        assert text[chunk.char_end : chunk.char_end + 2] == "\n\n", chunk.text[-40:]


def test_prefers_sentence_ends_without_paragraphs() -> None:
    text = TEXTS["one_paragraph"]
    chunks = chunk_text(text, whitespace_span_fn, max_tokens=40, overlap=5)
    assert len(chunks) > 3
    assert all(chunk.text.endswith(".") for chunk in chunks)


def test_early_paragraph_break_is_not_used() -> None:
    # A break after 3 tokens would give a tiny chunk; the chunker must prefer a later space.
    text = "Short intro here.\n\n" + " ".join(["word"] * 200)
    chunks = chunk_text(text, whitespace_span_fn, max_tokens=32, overlap=0)
    assert chunks[0].n_tokens >= 16
    assert "\n\n" in chunks[0].text


def test_falls_back_to_token_cut() -> None:
    chunks = chunk_text("y" * 100, char_span_fn, max_tokens=32, overlap=0)
    assert [c.n_tokens for c in chunks] == [32, 32, 32, 4]


def test_tokenizes_once() -> None:
    calls = []

    def counting(text: str) -> list[tuple[int, int]]:
        calls.append(len(text))
        return whitespace_span_fn(text)

    chunk_text(TEXTS["paragraphs"], counting, max_tokens=32, overlap=8)
    assert calls == [len(TEXTS["paragraphs"])]


@pytest.mark.parametrize(
    ("max_tokens", "overlap", "argument"),
    [
        (8, 0, "max_tokens"),
        (15, 0, "max_tokens"),
        (64, -1, "overlap"),
        (64, 32, "overlap"),
        (16, 8, "overlap"),
    ],
)
def test_bad_arguments(max_tokens: int, overlap: int, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        chunk_text("some text", whitespace_span_fn, max_tokens=max_tokens, overlap=overlap)


def test_boundary_arguments_are_accepted() -> None:
    assert chunk_text("some text", whitespace_span_fn, max_tokens=16, overlap=7)


# --- a real Hugging Face fast tokenizer, trained in-process --------------------------------------


@pytest.fixture(scope="module")
def tiny_fast_tokenizer() -> Any:
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    sentences = [make_text(seed, paragraphs=1, sentences=3, words=8) for seed in range(20)]
    model = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="[UNK]"))
    model.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=80, special_tokens=["[UNK]"])
    model.train_from_iterator(sentences, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=model, unk_token="[UNK]")


def test_hf_span_fn_matches_tokens(tiny_fast_tokenizer: Any) -> None:
    spans = hf_span_fn(tiny_fast_tokenizer)
    text = "Alpha beta  gamma.\nDelta omicron pi."
    got = spans(text)
    ids = tiny_fast_tokenizer(text, add_special_tokens=False)["input_ids"]
    tokens = tiny_fast_tokenizer.convert_ids_to_tokens(ids)
    assert "[UNK]" not in tokens
    assert [text[s:e] for s, e in got] == tokens
    assert len(got) > len(text.split()), "a small vocabulary must split some words into several tokens"


@pytest.mark.parametrize(("max_tokens", "overlap"), [(16, 4), (48, 0), (100, 20)])
def test_chunking_with_hf_tokenizer(tiny_fast_tokenizer: Any, max_tokens: int, overlap: int) -> None:
    spans = hf_span_fn(tiny_fast_tokenizer)
    text = TEXTS["paragraphs"]
    chunks = chunk_text(text, spans, max_tokens=max_tokens, overlap=overlap)
    assert len(chunks) > 1
    check_invariants(text, chunks, spans, max_tokens, overlap)


def test_hf_span_fn_rejects_slow_tokenizer() -> None:
    class SlowTokenizer:
        is_fast = False

    with pytest.raises(ValueError, match="fast tokenizer"):
        hf_span_fn(SlowTokenizer())
