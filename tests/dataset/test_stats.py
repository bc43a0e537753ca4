"""Build statistics: exact counts, a funnel that accounts for every drop, coverage, rejected.jsonl, plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from finetuneflow.dataset.stats import (
    REJECTED,
    compute_stats,
    format_stats,
    percentile,
    plot_token_histogram,
    token_summary,
    write_rejected,
)
from finetuneflow.state.datasets import read_jsonl

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def chat(rid: str, source: str) -> dict[str, Any]:
    return {
        "id": rid,
        "source": source,
        "messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}],
    }


def text(rid: str, source: str) -> dict[str, Any]:
    return {"id": rid, "source": source, "text": "Some document text."}


def reject(stage: str, reason: str, **extra: Any) -> dict[str, Any]:
    return {"stage": stage, "reason": reason, **extra}


# A small build: 3 documents (manual.pdf 4 chunks, faq.md 2, empty.txt 1) and one imported chat log.
SPLITS = {
    "train": [
        chat("c1", "manual.pdf"),
        chat("c2", "manual.pdf"),
        chat("c3", "faq.md"),
        text("t1", "manual.pdf"),
    ],
    "eval": [chat("c4", "faq.md"), chat("c5", "chats.jsonl")],
}
TOKENS = {"train": [10, 20, 30, 400], "eval": [50, 60]}
DOCUMENTS = {"manual.pdf": 4, "faq.md": 2, "empty.txt": 1}
HITS = {"manual.pdf": {0, 2, 3}, "faq.md": {1}, "empty.txt": set()}
REJECTS = [
    reject("provider", "timeout", source="manual.pdf", chunk_id=1),
    reject("parse", "no JSON object in the reply", source="faq.md", chunk_id=0, detail="Sure! Here..."),
    reject("grounding", "answer not grounded in the chunk", source="empty.txt", chunk_id=0),
    reject("grounding", "answer not grounded in the chunk", source="faq.md", chunk_id=1),
    reject("grounding", "question copies the chunk", source="faq.md", chunk_id=1),
    reject("dedup", "near-duplicate question", question="What is E4?"),
]
FUNNEL = [("provider", 7, 6), ("parse", 6, 5), ("grounding", 9, 6), ("dedup", 6, 5)]


def build(**over: Any) -> Any:
    args: dict[str, Any] = {
        "splits": SPLITS,
        "rejected": REJECTS,
        "token_lengths": TOKENS,
        "documents": DOCUMENTS,
        "chunk_hits": HITS,
        "funnel": FUNNEL,
        "token_limit": 100,
    }
    return compute_stats(**{**args, **over})


def test_exact_numbers_of_a_small_build() -> None:
    stats = build()
    assert stats.counts == {"train": {"chat": 3, "text": 1}, "eval": {"chat": 2, "text": 0}}
    assert list(stats.stages) == ["provider", "parse", "grounding", "dedup"]
    assert stats.stages["grounding"] == {"in": 9, "kept": 6, "rejected": 3}
    assert stats.rejections == {
        "provider": {"timeout": 1},
        "parse": {"no JSON object in the reply": 1},
        "grounding": {"answer not grounded in the chunk": 2, "question copies the chunk": 1},
        "dedup": {"near-duplicate question": 1},
    }
    assert stats.tokens["train"] == {
        "count": 4, "min": 10, "p50": 20, "p90": 400, "p99": 400, "max": 400, "mean": 115.0, "over_limit": 1
    }  # fmt: skip
    assert stats.tokens["eval"] == {
        "count": 2, "min": 50, "p50": 50, "p90": 60, "p99": 60, "max": 60, "mean": 55.0, "over_limit": 0
    }  # fmt: skip
    assert stats.coverage["manual.pdf"] == {
        "chunks": 4,
        "chunks_with_examples": 3,
        "examples": {"train": 3, "eval": 0},
    }
    assert stats.coverage["faq.md"]["examples"] == {"train": 1, "eval": 1}
    assert stats.unlisted_sources == ["chats.jsonl"]
    assert stats.totals == {
        "examples": 6,
        "rejected": 6,
        "documents": 3,
        "documents_without_examples": 1,
        "tokens": 570,
    }
    assert json.loads(json.dumps(stats.to_json())) == stats.to_json()


def test_coverage_lists_documents_without_examples() -> None:
    stats = build(documents={**DOCUMENTS, "blank.md": 3}, chunk_hits=None)
    assert stats.documents_without_examples == ["blank.md", "empty.txt"]
    assert stats.coverage["blank.md"] == {
        "chunks": 3,
        "chunks_with_examples": None,
        "examples": {"train": 0, "eval": 0},
    }
    report = format_stats(stats)
    assert "Documents without examples: 2 of 4" in report
    assert "blank.md, empty.txt" in report


@pytest.mark.parametrize(
    ("funnel", "stage"),
    [
        ([("provider", 7, 6), ("parse", 6, 5), ("grounding", 9, 7), ("dedup", 6, 5)], "grounding"),
        ([("provider", 7, 6), ("parse", 6, 6), ("grounding", 9, 6), ("dedup", 6, 5)], "parse"),
        ([("provider", 7, 6), ("parse", 6, 5), ("grounding", 9, 6)], "dedup"),  # rejects, no stage
        ([*FUNNEL, ("length", 5, 4)], "length"),  # a drop with no record
        ([*FUNNEL, ("length", 5, 6)], "length"),  # kept more than came in
        ([*FUNNEL, ("dedup", 5, 5)], "dedup"),  # twice
    ],
)
def test_funnel_mismatch_names_the_stage(funnel: list[tuple[str, int, int]], stage: str) -> None:
    with pytest.raises(ValueError, match=repr(stage)[1:-1]):
        build(funnel=funnel)


def test_inconsistent_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="'eval': 2 rows but 1 token lengths"):
        build(token_lengths={"train": TOKENS["train"], "eval": [5]})
    with pytest.raises(ValueError, match="needs a 'stage' and a 'reason'"):
        build(rejected=[*REJECTS, {"stage": "dedup"}])
    with pytest.raises(ValueError, match="outside"):
        build(chunk_hits={**HITS, "faq.md": {2}})
    with pytest.raises(ValueError, match="unknown documents"):
        build(chunk_hits={**HITS, "ghost.pdf": {0}})
    with pytest.raises(ValueError, match="neither 'messages' nor 'text'"):
        build(splits={"train": [*SPLITS["train"], {"id": "x", "source": "faq.md"}], "eval": SPLITS["eval"]},
              token_lengths={"train": [*TOKENS["train"], 1], "eval": TOKENS["eval"]})  # fmt: skip


def test_empty_build_has_zero_counts_and_no_lengths() -> None:
    stats = compute_stats({"train": [], "eval": []}, [], {}, {"a.md": 1}, None, [("provider", 0, 0)])
    assert stats.tokens["train"] == {
        "count": 0, "min": None, "p50": None, "p90": None, "p99": None, "max": None, "mean": None,
        "over_limit": 0,
    }  # fmt: skip
    assert stats.documents_without_examples == ["a.md"]
    assert "provider" in format_stats(stats)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 50, None),
        ([7], 0, 7),
        ([7], 50, 7),
        ([7], 100, 7),
        ([3, 1, 2], 0, 1),
        ([3, 1, 2], 50, 2),
        ([1, 2, 3, 4], 50, 2),
        ([1, 2, 3, 4], 51, 3),
        (list(range(1, 101)), 90, 90),
        (list(range(1, 101)), 99, 99),
        (list(range(1, 101)), 100, 100),
    ],
)
def test_percentile_nearest_rank(values: list[int], q: float, expected: int | None) -> None:
    assert percentile(values, q) == expected


def test_percentile_rejects_out_of_range_q() -> None:
    with pytest.raises(ValueError, match="q=101"):
        percentile([1], 101)


def test_token_summary_single_value_and_limit() -> None:
    one = token_summary([42], limit=42)
    assert one == {
        "count": 1, "min": 42, "p50": 42, "p90": 42, "p99": 42, "max": 42, "mean": 42.0, "over_limit": 0
    }  # fmt: skip
    assert token_summary([42, 43])["over_limit"] == 0  # no limit, nothing counted
    assert token_summary([42, 43], limit=42)["over_limit"] == 1


def test_rejected_jsonl_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "ds" / REJECTED
    assert write_rejected(path, REJECTS) == len(REJECTS)
    assert read_jsonl(path) == REJECTS
    assert not list(path.parent.glob("*.tmp"))
    assert write_rejected(path, []) == 0 and read_jsonl(path) == []


@pytest.mark.parametrize(
    ("lengths", "limit"),
    [
        (TOKENS, 100),
        (TOKENS, None),
        ({"train": [], "eval": []}, 512),
        ({"train": [], "eval": []}, None),
        ({}, None),
        ({"train": [5, 5, 5]}, None),
    ],
)
def test_histogram_is_a_real_png(tmp_path: Path, lengths: dict[str, list[int]], limit: int | None) -> None:
    path = plot_token_histogram(lengths, tmp_path / "plots" / "tokens.png", limit=limit)
    assert path == tmp_path / "plots" / "tokens.png"
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5_000  # axes, labels and title, not an empty canvas
    assert not list(path.parent.glob("*.tmp"))


def test_format_stats_shows_funnel_reasons_and_tokens() -> None:
    report = format_stats(build(), top=2)
    lines = report.splitlines()
    grounding = next(line for line in lines if line.strip().startswith("grounding"))
    assert grounding.split() == ["grounding", "9", "6", "3"]
    assert "Top rejection reasons (6 rejected in all)" in report
    assert "answer not grounded in the chunk" in report
    assert "near-duplicate question" not in report  # only the top 2
    assert ">100" in report
    train = next(line for line in lines if line.strip().startswith("train") and "chat" not in line)
    assert train.split() == ["train", "4", "10", "20", "400", "400", "400", "115.0", "1"]
    assert "chats.jsonl" in report
