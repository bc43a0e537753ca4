"""Large files stream: the chunks equal those of the in-memory path, limits are named settings,
progress moves inside a file.

Segments are lowered to a few KB through the config so that small files take the streaming path
(and the chunker slides over several windows) while the reference reads them whole.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from finetuneflow import api
from finetuneflow.errors import JobCancelled
from finetuneflow.events import Event
from finetuneflow.ingest.chunking import chunk_stream, chunk_text
from finetuneflow.ingest.config import IngestConfig
from finetuneflow.ingest.stream import clean_pieces
from finetuneflow.state import Chunk, File, Project, session_scope
from finetuneflow.text.clean import clean_text

WORDS = (
    "the cabinet heater warranty firmware résumé naïve Straße 東京 données 42 3.14 x_y (note) «quote»".split()
)


def _prose(rng: random.Random, words: int, newline_every: int = 12) -> str:
    out = []
    for k in range(words):
        out.append(rng.choice(WORDS))
        roll = rng.random()
        if roll < 0.04:
            out.append(".\n\n")
        elif roll < 0.06:
            out.append(".  \r\n")
        elif roll < 0.07:
            out.append("\n\n\n\t \n# Heading\n")
        elif k % newline_every == 0 and roll < 0.3:
            out.append(". ")
        else:
            out.append(" ")
    return "".join(out)


def _varied(folder: Path) -> None:
    """Files of every streamed kind, each larger than the small segments used below."""
    rng = random.Random(7)
    folder.mkdir()
    (folder / "prose.md").write_text("  \n" + _prose(rng, 9000) + "\n\n  ", encoding="utf-8")
    (folder / "one-line.md").write_text(_prose(rng, 6000).replace("\n", " ").replace("\r", ""))
    (folder / "bom.txt").write_bytes(b"\xef\xbb\xbf" + _prose(rng, 5000).encode())
    (folder / "latin.txt").write_bytes(_prose(rng, 5000).replace("東京", "café").encode("cp1252", "replace"))
    (folder / "controls.txt").write_text(_prose(rng, 4000).replace("heater", "he\x01at\x0cer\x1b"))
    lines = []
    for n in range(600):
        pick = n % 6
        if pick == 0:
            lines.append(
                json.dumps(
                    {
                        "messages": [
                            {"role": "user", "content": f"q{n} " + _prose(rng, 8)},
                            {"role": "assistant", "content": _prose(rng, 20)},
                        ]
                    }
                )
            )
        elif pick == 1:
            lines.append(json.dumps({"question": f"What is {n}?", "answer": _prose(rng, 12)}))
        elif pick == 2:
            lines.append(json.dumps({"text": _prose(rng, 60)}))
        elif pick == 3:
            lines.append("{not json")
        elif pick == 4:
            lines.append("")
        else:
            lines.append("[" * 150 + "]" * 150)  # deeper than max_depth: a named problem
    (folder / "mixed.jsonl").write_text("\n".join(lines), encoding="utf-8")
    examples: list[Any] = [
        {"title": "not an example"},
        {"instruction": _prose(rng, 5), "output": _prose(rng, 30)},
    ]
    examples += [{"question": f"Q{n}", "answer": _prose(rng, 25)} for n in range(300)] + [{"question": "Q"}]
    (folder / "examples.json").write_text(json.dumps(examples), encoding="utf-8")
    texts = [{"title": f"part {n}", "body": _prose(rng, 80)} for n in range(150)]
    (folder / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    (folder / "one-string.json").write_text(json.dumps({"body": _prose(rng, 6000)}), encoding="utf-8")


def _chunks(project: str) -> dict[str, list[tuple[Any, ...]]]:
    with session_scope() as s:
        rows = s.execute(
            select(
                File.path,
                Chunk.idx,
                Chunk.kind,
                Chunk.text,
                Chunk.n_tokens,
                Chunk.char_start,
                Chunk.char_end,
                Chunk.line,
                Chunk.messages,
                Chunk.meta,
                Chunk.drop_reason,
            )
            .join(File, File.id == Chunk.file_id)
            .join(Project, Project.id == File.project_id)
            .where(Project.name == project)
            .order_by(File.path, Chunk.idx)
        ).all()
    out: dict[str, list[tuple[Any, ...]]] = {}
    for path, *rest in rows:
        out.setdefault(path, []).append(tuple(rest))
    return out


def test_streamed_chunks_equal_the_in_memory_ones(tiny_model: Path, tmp_path: Path) -> None:
    _varied(tmp_path / "docs")
    base = dict(tokenizer=str(tiny_model), max_tokens=64, overlap=8, workers=1)
    whole = api.ingest([tmp_path / "docs"], "whole", IngestConfig(**base, segment_mb=100.0))
    streamed = api.ingest([tmp_path / "docs"], "streamed", IngestConfig(**base, segment_mb=0.01))
    assert [(f.path, f.status, f.chunks, f.problems, f.dropped) for f in streamed.files] == [
        (f.path, f.status, f.chunks, f.problems, f.dropped) for f in whole.files
    ]
    assert whole.counts() == {"ingested": 7, "partial": 2}, whole.files
    a, b = _chunks("whole"), _chunks("streamed")
    assert set(a) == set(b) and len(a) == 9
    for path in a:
        assert b[path] == a[path], path
    assert len(a["docs/prose.md"]) > 50  # many windows of 10 KB were walked


def test_chunk_stream_equals_chunk_text_over_small_windows(tiny_tokenizer: Any) -> None:
    def spans(text: str) -> list[tuple[int, int]]:
        return list(
            tiny_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        )

    rng = random.Random(3)
    for text in (_prose(rng, 4000), _prose(rng, 3000).replace("\n", " "), ("x" * 300 + "\n") * 60):
        for max_tokens, overlap in ((16, 0), (64, 10), (200, 50)):
            expected = chunk_text(text, spans, max_tokens, overlap)
            pieces = [text[i : i + 777] for i in range(0, len(text), 777)]
            assert list(chunk_stream(pieces, spans, max_tokens, overlap, window=2000)) == expected


def test_clean_pieces_equal_clean_text() -> None:
    rng = random.Random(5)
    text = "\ufeff \n\n" + _prose(rng, 3000).replace("cabinet", "cab\u0301inet\r") + " \t\n\n\n"
    for size in (1, 7, 100, 4096):
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        assert "".join(clean_pieces(pieces)) == clean_text(text)


@pytest.mark.parametrize("segment_mb", [1.0, 0.01])
def test_deep_json_is_refused_by_name(tiny_model: Path, tmp_path: Path, segment_mb: float) -> None:
    tmp_path = tmp_path / "in"
    tmp_path.mkdir()
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "deep-list.json").write_text("[" + "[" * 100_000 + "]" * 100_000 + "]")
    cfg = IngestConfig(tokenizer=str(tiny_model), workers=1, segment_mb=segment_mb)
    report = api.ingest([tmp_path], "p", cfg)
    for f in report.files:
        assert f.status == "failed"
        assert "max_depth=100" in f.problems[0] and "--max-depth" in f.problems[0], f.problems
        assert "internal error" not in f.problems[0]


def test_record_limits_are_named(tiny_model: Path, tmp_path: Path) -> None:
    tmp_path = tmp_path / "in"
    tmp_path.mkdir()
    long_line = json.dumps({"text": "word " * 5000})
    (tmp_path / "lines.jsonl").write_text(
        long_line + "\n" + json.dumps({"text": "a short line of text here"}) + "\n"
    )
    (tmp_path / "page.html").write_text("<html><body><p>" + "text " * 5000 + "</p></body></html>")
    (tmp_path / "big.txt").write_text("words " * 20000)
    cfg = IngestConfig(
        tokenizer=str(tiny_model), workers=1, segment_mb=0.001, max_record_mb=0.01, max_file_mb=0.1
    )
    files = {Path(f.path).name: f for f in api.ingest([tmp_path], "p", cfg).files}
    assert files["lines.jsonl"].status == "partial" and files["lines.jsonl"].chunks == 1, files["lines.jsonl"]
    assert (
        "line 1:" in files["lines.jsonl"].problems[0]
        and "--max-record-mb" in files["lines.jsonl"].problems[0]
    )
    assert files["page.html"].status == "failed" and "max_record_mb=0.01" in files["page.html"].problems[0]
    assert files["big.txt"].status == "failed" and "--max-file-mb" in files["big.txt"].problems[0]


def test_progress_moves_inside_a_large_file(tiny_model: Path, tmp_path: Path) -> None:
    tmp_path = tmp_path / "in"
    tmp_path.mkdir()
    (tmp_path / "big.md").write_text(_prose(random.Random(1), 20000))
    size = (tmp_path / "big.md").stat().st_size
    events: list[Event] = []
    cfg = IngestConfig(tokenizer=str(tiny_model), workers=1, segment_mb=0.01)
    api.ingest([tmp_path / "big.md"], "p", cfg, on_event=events.append)
    inside = [e.done for e in events if e.stage == "bytes" and e.message == "big.md" and e.done < size]
    assert len(inside) >= 5 and inside == sorted(inside)
    assert all(e.total == size for e in events if e.stage == "bytes")


def test_a_large_file_whose_legacy_text_starts_after_ascii_is_not_mangled(
    tiny_model: Path, tmp_path: Path
) -> None:
    # the encoding used to be guessed from the first segment alone: plain ASCII said UTF-8, and the
    # cp1252 bytes after it were replaced by U+FFFD without a word
    tmp_path = tmp_path / "in"
    tmp_path.mkdir()
    line = "Café crème brûlée, Zürich Straße, naïve façade.\n".encode("cp1252")
    (tmp_path / "big.txt").write_bytes(b"plain ascii words here.\n" * 2000 + line * 3)
    cfg = IngestConfig(tokenizer=str(tiny_model), workers=1, segment_mb=0.01)
    assert api.ingest([tmp_path], "p", cfg).counts() == {"ingested": 1}
    text = "".join(chunk[2] for chunk in _chunks("p")["in/big.txt"])
    assert "Café crème brûlée" in text and "\ufffd" not in text


@pytest.mark.parametrize("name", ["big.txt", "big.csv"])
def test_a_large_utf8_file_with_stray_cp1252_bytes_keeps_its_utf8(
    tiny_model: Path, tmp_path: Path, name: str
) -> None:
    # the segment where UTF-8 failed holds only ASCII and one Windows quote: alone it looks like
    # cp1252, and the whole file was read so, its UTF-8 accents in earlier segments mangled
    tmp_path = tmp_path / "in"
    tmp_path.mkdir()
    head = "question,answer\n" + "Où est le café?,À Zürich déjà.\n" * 400
    tail = b"plain,ascii row\n" * 400 + b"it\x92s,here\n"
    (tmp_path / name).write_bytes(head.encode() + tail)
    cfg = IngestConfig(tokenizer=str(tiny_model), workers=1, segment_mb=0.01)
    assert api.ingest([tmp_path], "p", cfg).counts() == {"ingested": 1}
    text = "".join(chunk[2] for chunk in _chunks("p")[f"in/{name}"])
    assert "café" in text and "Zürich" in text and "it’s" in text
    assert "Ã" not in text and "\ufffd" not in text


def test_a_cancel_inside_a_large_file_stops_the_ingest_and_the_file_is_read_again(
    tiny_model: Path, tmp_path: Path
) -> None:
    # the file's own error handler used to swallow the cancel: the job "finished", the file was
    # marked partial and every later ingest skipped it as unchanged, the unread rest lost
    tmp_path = tmp_path / "in"
    tmp_path.mkdir()
    (tmp_path / "big.md").write_text(_prose(random.Random(2), 20000))
    cfg = IngestConfig(tokenizer=str(tiny_model), workers=1, segment_mb=0.01)

    def cancel_inside(event: Event) -> None:
        if event.stage == "bytes" and event.done > 0:
            raise JobCancelled("job 1 was cancelled")

    with pytest.raises(JobCancelled):
        api.ingest([tmp_path / "big.md"], "p", cfg, on_event=cancel_inside)
    with session_scope() as s:
        assert s.execute(select(File.status)).scalars().all() == ["failed"]
    again = api.ingest([tmp_path / "big.md"], "p", cfg)
    assert again.counts() == {"ingested": 1}
    whole = api.ingest([tmp_path / "big.md"], "q", cfg)
    assert again.files[0].chunks == whole.files[0].chunks
