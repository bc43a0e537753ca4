"""Inputs that used to stop a whole ingest, lose earlier work or read wrong: a lone surrogate
escape in JSON, a file name in an old encoding, a named pipe, a folder tree 1,000 deep, JSON
Lines with raw U+2028 in a string, and a partial file read again (--reread) once its limit is
raised."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from finetuneflow import api, paths
from finetuneflow.ingest.config import IngestConfig
from finetuneflow.ingest.report import read_report
from finetuneflow.state import Chunk, session_scope


def cfg(tiny_model: Path, **kw: object) -> IngestConfig:
    return IngestConfig(tokenizer=str(tiny_model), max_tokens=128, overlap=16, **kw)  # type: ignore[arg-type]


def _texts() -> list[str]:
    with session_scope() as s:
        return [c.text for c in s.scalars(select(Chunk))]


@pytest.fixture
def alarm() -> Iterator[None]:
    """A hang fails the test instead of the suite."""

    def hung(*_: object) -> None:
        raise TimeoutError("ingest hung")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def test_a_lone_surrogate_escape_is_replaced_and_nothing_else_is_lost(
    tiny_model: Path, tmp_path: Path
) -> None:
    src = tmp_path / "chats"
    src.mkdir()
    (src / "a_good.txt").write_text("A perfectly good note about the printer and its warranty terms.")
    (src / "chat.jsonl").write_text(  # a chat export cut in the middle of an emoji
        '{"question": "What does E4 mean on the label printer?", "answer": "The cover is open."}\n'
        '{"question": "Is it fixed? \\ud83d", "answer": "Close the cover and press resume."}\n'
        '{"messages": [{"role": "bot\\udc80", "content": "hi"}, {"role": "user", "content": "x"}]}\n'
    )
    (src / "z_good.md").write_text("# Notes\n\nAnother good note about the label roll and the sensor.")
    report = api.ingest([src], "p", cfg(tiny_model))
    status = {Path(f.path).name: f.status for f in report.files}
    assert status == {"a_good.txt": "ingested", "chat.jsonl": "partial", "z_good.md": "ingested"}
    texts = "\n".join(_texts())
    assert "Is it fixed? \ufffd" in texts and "Close the cover" in texts and "label roll" in texts
    written = read_report(paths.project_dir("p"))  # the problem line quoting the role is written too
    assert any("unsupported role" in p for f in written["files"] for p in f["problems"])


def test_a_file_name_in_an_old_encoding_is_skipped_by_name_not_fatal(
    tiny_model: Path, tmp_path: Path
) -> None:
    src = tmp_path / "share"
    src.mkdir()
    (src / "good.txt").write_text("A perfectly good note about the product and its warranty.")
    with open(bytes(src) + b"/caf\xe9.txt", "wb") as fh:  # Latin-1, as an old share or zip names it
        fh.write(b"Notes about the coffee machine and its descaling program.")
    report = api.ingest([src], "p", cfg(tiny_model))
    by_status = {f.status: f for f in report.files}
    assert sorted(by_status) == ["ingested", "skipped"]
    skipped = by_status["skipped"]
    assert skipped.path.endswith("caf\ufffd.txt") and "not valid UTF-8" in skipped.problems[0]
    assert any("warranty" in t for t in _texts())


def test_a_named_pipe_is_refused_not_waited_on(tiny_model: Path, tmp_path: Path, alarm: None) -> None:
    os.mkfifo(tmp_path / "notes.txt")
    (tmp_path / "good.txt").write_text("A perfectly good note about the product and its warranty.")
    report = api.ingest([tmp_path / "notes.txt", tmp_path / "good.txt"], "p", cfg(tiny_model))
    assert [(f.status, f.problems) for f in report.files][0] == (
        "skipped",
        ["not a regular file (a pipe, socket or device)"],
    )
    assert report.files[1].status == "ingested"


def test_a_folder_tree_a_thousand_deep_is_walked(tiny_model: Path, tmp_path: Path) -> None:
    src = tmp_path / "deep"
    folder = src
    src.mkdir()
    for _ in range(1000):  # one level at a time: Path.mkdir(parents=True) recurses too
        folder = folder / "d"
        folder.mkdir()
    (folder / "bottom.txt").write_text("The note at the very bottom of a deep tree of folders.")
    (src / "top.txt").write_text("The note at the top of the same tree of folders, for order.")
    try:
        report = api.ingest([src], "p", cfg(tiny_model))
        assert [(Path(f.path).name, f.status) for f in report.files] == [
            ("bottom.txt", "ingested"),
            ("top.txt", "ingested"),
        ]
    finally:  # bottom up: pytest's own cleanup (shutil.rmtree) recurses, and 1,000 is too deep for it
        (folder / "bottom.txt").unlink()
        while folder != src:
            folder.rmdir()
            folder = folder.parent


def test_json_lines_with_raw_line_separators_inside_strings_keep_every_record(
    tiny_model: Path, tmp_path: Path
) -> None:
    rows = [
        {"question": "What is the first rule?", "answer": "Keep the cover closed\u2028while printing."},
        {"question": "And the second?", "answer": "Clean the head\x85every week."},
        {"question": "The third?", "answer": "Use genuine labels\u2029only."},
        {"question": "The fourth?", "answer": "Switch it off at night."},
    ]
    path = tmp_path / "rules.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    report = api.ingest([path], "p", cfg(tiny_model))
    assert report.files[0].status == "ingested" and report.files[0].problems == []
    texts = "\n".join(_texts())
    assert all(w in texts for w in ("first rule", "second", "third", "fourth", "genuine labels"))


def test_a_partial_file_is_read_again_once_its_limit_is_raised(tiny_model: Path, tmp_path: Path) -> None:
    deep: object = "deep answer"
    for _ in range(150):
        deep = [deep]
    path = tmp_path / "faq.jsonl"
    path.write_text(
        json.dumps({"question": "What does E4 mean?", "answer": "The cover is open."}) + "\n"
        + json.dumps({"question": "A nested one?", "answer": "x", "extra": deep}) + "\n"
    )  # fmt: skip
    first = api.ingest([path], "p", cfg(tiny_model))
    assert first.files[0].status == "partial" and "max-depth" in first.files[0].problems[0]
    assert "--reread" in first.files[0].problems[0]
    # a re-run keeps a partial file (and its chunk ids) as it was; --reread reads it with the new limit
    assert api.ingest([path], "p", cfg(tiny_model, max_depth=500)).files[0].status == "unchanged"
    again = api.ingest([path], "p", cfg(tiny_model, max_depth=500, reread=True))  # as the problem says
    assert again.files[0].status == "ingested", again.files[0]
    assert api.ingest([path], "p", cfg(tiny_model, max_depth=500)).files[0].status == "unchanged"


def test_a_file_that_now_fails_keeps_its_earlier_chunks(tiny_model: Path, tmp_path: Path) -> None:
    path = tmp_path / "faq.json"
    rows = [
        {"question": f"What does error E{i} mean?", "answer": f"Part {i} needs a look."} for i in range(8)
    ]
    path.write_text(json.dumps(rows))
    assert api.ingest([path], "p", cfg(tiny_model)).files[0].status == "ingested"
    before = sorted(_texts())
    path.write_text(json.dumps(rows)[:150])  # truncated by a sync conflict
    again = api.ingest([path], "p", cfg(tiny_model)).files[0]
    assert again.status == "failed" and "invalid JSON" in again.problems[0]
    assert any("earlier version of this file and its chunks are kept" in n for n in again.notes)
    assert sorted(_texts()) == before
    path.write_text(json.dumps(rows[:3]))  # mended: read again, and this version replaces the earlier
    mended = api.ingest([path], "p", cfg(tiny_model)).files[0]
    assert mended.status == "ingested" and len(_texts()) < len(before)
