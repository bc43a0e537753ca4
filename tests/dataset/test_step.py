"""The dataset build through its live core, ``build_step``: converters, the pool, the rating filter
and the split invariants. The database is filled as ingest and generation leave it; tokens are
counted as words, so no tokenizer is needed (the CLI test at the end uses the real resolution)."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from finetuneflow import paths
from finetuneflow.dataset import pool
from finetuneflow.dataset.convert import DatasetConfig
from finetuneflow.dataset.finalize import MIN_DOCUMENTS
from finetuneflow.dataset.step import build_step
from finetuneflow.records import Message
from finetuneflow.state import schema, session_scope
from finetuneflow.state.repo import get_or_create_project

SYLLABLES = "ka lo mi ter von dra pel sun qui bor nex tal fu ge ri sa".split()


def prose(seed: int | str, n: int) -> str:
    """``n`` made-up words; different seeds share too few 5-grams to count as near duplicates."""
    rng = random.Random(seed)
    return " ".join("".join(rng.choices(SYLLABLES, k=3)) for _ in range(n)) + "."


def words(texts: list[str]) -> list[int]:
    """The token counter the build is given: one token per word."""
    return [len(t.split()) for t in texts]


def chat(seed: int) -> list[Message]:
    return [
        {"role": "user", "content": prose(f"q{seed}", 8)},
        {"role": "assistant", "content": prose(f"a{seed}", 12)},
    ]


@dataclass
class Source:
    """A source file as ingest stores it, with the questions an LLM generated from its chunks."""

    path: str
    chunks: list[str] = field(default_factory=list)  # text chunks in file order
    questions: list[list[list[Message]]] = field(default_factory=list)  # generated chats, per chunk
    rows: list[list[Message]] = field(default_factory=list)  # Q&A sheet rows (converted, not generated)


def corpus(documents: int, *, chunks: int = 2, questions: int = 3, qa_rows: int = 10) -> list[Source]:
    """``documents`` text files with generated questions per chunk, plus a Q&A sheet."""
    out = []
    for d in range(documents):
        seeds = [1000 * d + 10 * c for c in range(chunks)]
        out.append(
            Source(
                f"docs/manual-{d}.md",
                [prose(s, 40) for s in seeds],
                [[chat(s + q + 1) for q in range(questions)] for s in seeds],
            )
        )
    return [*out, Source("faq.csv", rows=[chat(-1000 - i) for i in range(qa_rows)])]


def project(name: str, sources: list[Source], shuffle: int | None = None) -> int:
    """Write ``sources`` into project ``name``: files, chunks and generated pool rows; with ``shuffle``
    (a seed) in another order, as ingesting the files in another order or concurrently would."""
    rng = random.Random(shuffle)
    order = (lambda xs: rng.sample(xs, len(xs))) if shuffle is not None else list
    generated: list[tuple[int, str, list[Message]]] = []
    with session_scope() as s:
        pid = get_or_create_project(s, name).id
        for src in order(sources):
            file = schema.File(
                project_id=pid, path=src.path, stored_as=src.path, sha256="0", size=0, status="ok"
            )
            s.add(file)
            s.flush()
            units = [("text", i, text, None) for i, text in enumerate(src.chunks)]
            units += [("qa", i, m[0]["content"], m) for i, m in enumerate(src.rows)]
            for kind, idx, text, messages in order(units):
                chunk = schema.Chunk(
                    project_id=pid, file_id=file.id, kind=kind, idx=idx, text=text,
                    n_tokens=len(text.split()), messages=messages,
                )  # fmt: skip
                s.add(chunk)
                s.flush()
                if kind == "text" and idx < len(src.questions):
                    generated += [(chunk.id, src.path, m) for m in src.questions[idx]]
        for chunk_id, source, messages in order(generated):
            add_generated(s, pid, chunk_id, source, messages)
    return pid


def add_generated(
    s: Any, pid: int, chunk_id: int | None, source: str, messages: list[Message], **cols: Any
) -> schema.Example:
    row = schema.Example(
        project_id=pid, dataset="default", uid=pool.uid_of(messages), kind="chat", split="", origin="llm",
        source=source, chunk_id=chunk_id, messages=messages, meta={"chunk_id": chunk_id}, **cols,
    )  # fmt: skip
    s.add(row)
    s.flush()
    return row


def build(pid: int, out: Path, **settings: Any) -> dict[str, Any]:
    return build_step(session_scope, pid, out, DatasetConfig(**settings), words)


@dataclass(frozen=True)
class Built:
    """One built example, with where it came from."""

    uid: str
    split: str  # train | eval | heldout
    origin: str  # converter | llm
    kind: str  # chat | text
    source: str
    chunk: int | None  # the chunk's position in its file


def built(pid: int, out: Path) -> list[Built]:
    """The build's examples as the pool records them, checked against the files written."""
    query = (
        select(schema.Example, schema.Chunk.idx)
        .outerjoin(schema.Chunk, schema.Chunk.id == schema.Example.chunk_id)
        .where(schema.Example.project_id == pid, schema.Example.split != "")
    )
    with session_scope() as s:
        rows = [
            Built(e.uid, e.split, e.origin, e.kind, e.source, idx) for e, idx in s.execute(query).tuples()
        ]
    on_disk = {
        json.loads(line)["id"]: path.stem
        for path in out.glob("*/*.jsonl")
        for line in path.read_text().splitlines()
    }
    assert on_disk == {r.uid: r.split for r in rows}
    return rows


def sides(rows: list[Built], key: Any) -> dict[Any, set[str]]:
    """Per group (``key`` of a row), the sides its rows are on: eval, or train (train and heldout)."""
    out: dict[Any, set[str]] = defaultdict(set)
    for r in rows:
        out[key(r)].add("eval" if r.split == "eval" else "train")
    return out


def documents(rows: list[Built]) -> list[Built]:
    """Rows from text documents: their chunks and the questions generated from them (a Q&A sheet's
    rows are each a document of their own)."""
    return [r for r in rows if r.source != "faq.csv"]


# --- converters and files ---------------------------------------------------------------------------


def test_duplicates_and_short_chunks_are_counted_not_silently_dropped(tmp_path: Path) -> None:
    sources = corpus(0, qa_rows=6)
    sources[0].rows.append(sources[0].rows[3])  # the same Q&A row twice
    sources.append(Source("notes.md", chunks=[prose(7, 40), "tiny"]))
    manifest = build(project("p", sources), tmp_path)
    assert manifest["dropped"] == {"exact duplicate": 1, "text shorter than min_text_tokens": 1}
    assert manifest["counts"]["chat/train"] + manifest["counts"]["chat/eval"] == 6
    assert manifest["counts"]["text/train"] == 1


def test_system_prompt_added_where_missing(tmp_path: Path) -> None:
    build(project("p", corpus(0, qa_rows=3)), tmp_path, system_prompt="Be brief.")
    rows = [json.loads(x) for f in tmp_path.glob("chat/*.jsonl") for x in f.read_text().splitlines()]
    assert len(rows) == 3
    assert all(r["messages"][0] == {"role": "system", "content": "Be brief."} for r in rows)


def test_written_jsonl_loads_with_hf_datasets(tmp_path: Path) -> None:
    import datasets

    manifest = build(project("p", corpus(4)), tmp_path)
    files = {"train": str(tmp_path / "chat/train.jsonl"), "eval": str(tmp_path / "chat/eval.jsonl")}
    ds = datasets.load_dataset("json", data_files=files)
    assert ds["train"][0]["messages"][0]["role"] == "user"
    text = datasets.load_dataset("json", data_files=str(tmp_path / "text/train.jsonl"))["train"]
    assert text.column_names == ["id", "source", "text"]
    saved = json.loads((tmp_path / "manifest.json").read_text())
    expected = {"chat/train.jsonl", "chat/eval.jsonl", "chat/heldout.jsonl", "text/train.jsonl"}
    assert expected <= set(saved["files"]) and saved["counts"] == manifest["counts"]


def test_chat_rows_name_the_chunk_they_were_written_from(tmp_path: Path) -> None:
    """Evaluation tells an open-book memory answer by it (the question's own chunk recalled)."""
    pid = project("p", corpus(4))
    build(pid, tmp_path)
    with session_scope() as s:
        chunk_of = {
            e.uid: e.chunk_id
            for e in s.scalars(select(schema.Example).where(schema.Example.project_id == pid))
        }
    rows = [
        json.loads(line) for path in tmp_path.glob("chat/*.jsonl") for line in path.read_text().splitlines()
    ]
    assert rows and all(isinstance(r["chunk_id"], int) and r["chunk_id"] == chunk_of[r["id"]] for r in rows)
    assert len({r["chunk_id"] for r in rows}) > 4  # per chunk, not one value
    texts = [json.loads(line) for line in (tmp_path / "text/train.jsonl").read_text().splitlines()]
    assert texts and all("chunk_id" not in t for t in texts)


# --- split invariants -------------------------------------------------------------------------------

SPLIT = {"eval_fraction": 0.3, "heldout_fraction": 0.3}  # big shares, so every side has rows


@pytest.mark.parametrize("n_documents", [8, MIN_DOCUMENTS - 1], ids=["document split", "chunk split"])
def test_no_document_on_both_sides(tmp_path: Path, n_documents: int) -> None:
    pid = project("p", corpus(n_documents, chunks=4))
    unit = build(pid, tmp_path, **SPLIT)["split_unit"]
    rows = documents(built(pid, tmp_path))
    assert {r.split for r in rows} == {"train", "eval", "heldout"}  # not trivially true
    if unit == "document":
        assert all(len(s) == 1 for s in sides(rows, lambda r: r.source).values())
    else:  # too few documents to keep each on one side: then no chunk is on both
        assert all(len(s) == 1 for s in sides(rows, lambda r: (r.source, r.chunk)).values())


@pytest.mark.parametrize("n_documents", [8, MIN_DOCUMENTS - 1], ids=["document split", "chunk split"])
def test_input_order_does_not_change_the_split(tmp_path: Path, n_documents: int) -> None:
    sources = corpus(n_documents, chunks=4)
    first, second = project("a", sources), project("b", sources, shuffle=1)
    build(first, tmp_path / "a", **SPLIT)
    build(second, tmp_path / "b", **SPLIT)
    a = {r.uid: r.split for r in built(first, tmp_path / "a")}
    assert a == {r.uid: r.split for r in built(second, tmp_path / "b")}
    assert set(a.values()) == {"train", "eval", "heldout"}
    build(first, tmp_path / "a", **SPLIT, seed=7)  # the seed, and only the seed, moves it
    assert {r.uid: r.split for r in built(first, tmp_path / "a")} != a


@pytest.mark.parametrize("n_documents", [8, MIN_DOCUMENTS - 1], ids=["document split", "chunk split"])
def test_heldout_questions_come_only_from_train_documents(tmp_path: Path, n_documents: int) -> None:
    pid = project("p", corpus(n_documents, chunks=4))
    unit = build(pid, tmp_path, **SPLIT)["split_unit"]
    rows = built(pid, tmp_path)
    heldout = [r for r in rows if r.split == "heldout"]
    assert heldout and all(r.origin == "llm" for r in heldout)
    group = (lambda r: r.source) if unit == "document" else (lambda r: (r.source, r.chunk))
    eval_groups = {group(r) for r in rows if r.split == "eval"}
    train_groups = {group(r) for r in rows if r.split == "train"}
    assert all(group(r) not in eval_groups and group(r) in train_groups for r in heldout)


def test_tiny_dataset_moves_a_whole_document_to_eval(tmp_path: Path) -> None:
    """Eval is never left empty: one document moves, with its held-out questions and its text."""
    pid = project("p", corpus(MIN_DOCUMENTS, chunks=3, qa_rows=0))
    build(pid, tmp_path, eval_fraction=0.01, heldout_fraction=0.3)
    rows = built(pid, tmp_path)
    assert any(r.split == "eval" for r in rows)
    assert all(len(s) == 1 for s in sides(rows, lambda r: r.source).values())


def test_fallback_to_a_chunk_split_is_reported(tmp_path: Path) -> None:
    few, enough = project("few", corpus(MIN_DOCUMENTS - 1)), project("enough", corpus(MIN_DOCUMENTS))
    assert build(few, tmp_path / "few")["split_unit"] == "chunk"
    assert json.loads((tmp_path / "few" / "manifest.json").read_text())["split_unit"] == "chunk"
    assert build(enough, tmp_path / "enough")["split_unit"] == "document"


# --- the rating filter ------------------------------------------------------------------------------

# (status, rating) of a pool row -> kept, or the reason it is dropped, under min_rating=4
RATED = {
    ("new", None): None,  # unreviewed: passes (the filter is about ratings)
    ("new", 4): None,
    ("new", 2): "rating below 4",
    ("approved", None): None,
    ("approved", 5): None,
    ("approved", 3): "rating below 4",  # approval does not lift a low rating
    ("rejected", 5): "rejected at generation: judge score below 3",
    ("deleted", 5): "deleted in review",
}


def rated_pool(name: str = "p") -> tuple[int, dict[tuple[str, int | None], str]]:
    """A project whose pool holds one generated example per case of :data:`RATED`; returns the
    project id and each case's uid."""
    pid = project(name, [Source("docs/a.md", [prose(1, 40)], [[]])])
    uids = {}
    with session_scope() as s:
        for i, (status, rating) in enumerate(RATED):
            reason = "judge score below 3" if status == "rejected" else None
            row = add_generated(
                s, pid, None, "docs/a.md", chat(i + 1), status=status, rating=rating, reason=reason
            )
            uids[(status, rating)] = row.uid
    return pid, uids


def outcome(out: Path) -> dict[str, str | None]:
    """uid -> None when built, else the reason in rejected.jsonl."""
    kept = {json.loads(x)["id"]: None for f in out.glob("chat/*.jsonl") for x in f.read_text().splitlines()}
    dropped = {
        r["id"]: r["reason"] for r in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())
    }
    return {**kept, **dropped}


def test_min_rating_keeps_what_is_rated_at_least_that_or_unrated(tmp_path: Path) -> None:
    pid, uids = rated_pool()
    build(pid, tmp_path, min_rating=4)
    got = outcome(tmp_path)
    assert {case: got[uid] for case, uid in uids.items()} == RATED


def test_rated_only_also_drops_the_unrated(tmp_path: Path) -> None:
    pid, uids = rated_pool()
    manifest = build(pid, tmp_path, min_rating=4, rated_only=True)
    got = outcome(tmp_path)
    assert got[uids[("new", None)]] == got[uids[("approved", None)]] == "unrated (rated_only)"
    assert got[uids[("approved", 5)]] is None
    assert manifest["dropped"]["pool: unrated (rated_only)"] == 3  # and the document's text chunk


def test_no_minimum_keeps_every_live_example(tmp_path: Path) -> None:
    pid, uids = rated_pool()
    build(pid, tmp_path)
    got = outcome(tmp_path)
    assert {case for case, uid in uids.items() if got[uid] is None} == {
        case for case in RATED if case[0] in ("new", "approved")
    }


def test_a_filter_that_leaves_nothing_says_why(tmp_path: Path) -> None:
    pid = project("p", corpus(0, qa_rows=3))
    with pytest.raises(ValueError, match=r"all 3 examples are left out \(3 unrated \(rated_only\)\)"):
        build(pid, tmp_path, rated_only=True)


def test_cli_build_min_rating(tmp_path: Path, tiny_model: Path, ftf_home: Path) -> None:
    from finetuneflow.cli import app

    _, uids = rated_pool("cli")
    paths.project_settings("cli", tokenizer=str(tiny_model))  # as ingest records it
    result = CliRunner().invoke(app, ["dataset", "build", "-p", "cli", "--min-rating", "4"])
    assert result.exit_code == 0, result.output
    got = outcome(ftf_home / "projects" / "cli" / "datasets" / "default")
    assert {case: got[uid] for case, uid in uids.items()} == RATED
