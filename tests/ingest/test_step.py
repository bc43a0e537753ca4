import os
import shutil
from pathlib import Path

from conftest import QUICKSTART
from sqlalchemy import select

from finetuneflow import api
from finetuneflow.ingest.config import IngestConfig
from finetuneflow.ingest.raw import read_raw
from finetuneflow.state import Chunk, File, session_scope


def cfg(tiny_model: Path) -> IngestConfig:
    return IngestConfig(tokenizer=str(tiny_model), max_tokens=128, overlap=16)


def test_quickstart_ingests_with_provenance(tiny_model: Path) -> None:
    report = api.ingest([QUICKSTART / "data"], "p", cfg(tiny_model))
    assert report.counts() == {"ingested": 4}
    with session_scope() as s:
        chunks = s.scalars(select(Chunk)).all()
        files = {f.id: f for f in s.scalars(select(File))}
    kinds = {c.kind for c in chunks}
    assert kinds == {"text", "qa", "conversation"}
    pdf_pages = {c.page for c in chunks if files[c.file_id].path.endswith(".pdf")}
    assert pdf_pages == {1, 2, 3}
    assert all(c.n_tokens <= 128 for c in chunks if c.kind == "text")
    for f in files.values():
        assert read_raw(f.stored_as) == (QUICKSTART / "data" / Path(f.path).name).read_bytes()


def test_reingest_skips_unchanged_and_replaces_changed(tiny_model: Path, tmp_path: Path) -> None:
    src = tmp_path / "docs"
    src.mkdir()
    (src / "a.md").write_text("# A\n\nFirst version of the note about the cabinet.")
    api.ingest([src], "p", cfg(tiny_model))
    assert api.ingest([src], "p", cfg(tiny_model)).counts() == {"unchanged": 1}
    (src / "a.md").write_text("# A\n\nSecond version, completely rewritten.")
    assert api.ingest([src], "p", cfg(tiny_model)).counts() == {"ingested": 1}
    with session_scope() as s:
        texts = [c.text for c in s.scalars(select(Chunk))]
    assert len(texts) == 1 and "Second version" in texts[0]


def test_one_bad_file_never_stops_the_others(tiny_model: Path, tmp_path: Path) -> None:
    src = tmp_path / "mixed"
    src.mkdir()
    (src / "good.txt").write_text("A perfectly good note about the product and its warranty.")
    (src / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (src / "empty.md").write_bytes(b"")
    (src / "tool.exe").write_bytes(b"MZ")
    outside = tmp_path / "secret.txt"
    outside.write_text("outside the folder")
    os.symlink(outside, src / "link.txt")
    shutil.copy(QUICKSTART / "data" / "qa.csv", src / "qa.csv")
    report = api.ingest([src], "p", cfg(tiny_model))
    status = {Path(f.path).name: f.status for f in report.files}
    assert status == {
        "good.txt": "ingested",
        "broken.pdf": "failed",
        "empty.md": "failed",
        "tool.exe": "skipped",
        "link.txt": "skipped",
        "qa.csv": "ingested",
    }
    problems = {Path(f.path).name: " ".join(f.problems) for f in report.files}
    assert "outside" in problems["link.txt"] and problems["broken.pdf"]


def test_ingest_freezes_the_heap_only_while_it_runs(tiny_model: Path, tmp_path: Path) -> None:
    import gc

    from finetuneflow.ingest import step

    (tmp_path / "a.txt").write_text("A note about the heater and its firmware, long enough to keep.")
    seen: list[int] = []
    api.ingest([tmp_path], "p", cfg(tiny_model), on_event=lambda e: seen.append(gc.get_freeze_count()))
    assert max(seen) > 0 and gc.get_freeze_count() == 0
    gc.freeze()  # an application that froze objects itself keeps them frozen
    try:
        # Frozen objects that die leave the permanent generation (another test's thread may free a
        # few at any moment), so the count can only fall here: no new freeze (the count would jump
        # by every tracked object) and no unfreeze (it would drop to 0).
        frozen = gc.get_freeze_count()
        with step._frozen_heap():
            assert 0.99 * frozen <= gc.get_freeze_count() <= frozen
        assert 0.99 * frozen <= gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()


def test_two_files_of_one_name_in_one_ingest_fail_the_second_not_the_batch(
    tiny_model: Path, tmp_path: Path
) -> None:
    # the file's name is its row's key: the second used to break the batch's transaction
    # (IntegrityError, every file of the batch lost)
    for team, words in (("teamA", "apples are red"), ("teamB", "boats have sails")):
        (tmp_path / team).mkdir()
        (tmp_path / team / "notes.txt").write_text(f"{team} notes: {words} in the summer months.")
    (tmp_path / "other.txt").write_text("Another note that has nothing to do with either team.")
    a, b = tmp_path / "teamA" / "notes.txt", tmp_path / "teamB" / "notes.txt"
    report = api.ingest([a, b, tmp_path / "other.txt", a], "p", cfg(tiny_model))
    assert [(f.path, f.status) for f in report.files] == [
        ("notes.txt", "ingested"),
        ("notes.txt", "failed"),
        ("other.txt", "ingested"),
        ("notes.txt", "skipped"),
    ]
    assert str(a) in report.files[1].problems[0] and "rename one" in report.files[1].problems[0]
    assert report.files[3].problems == ["given twice in this ingest; read once"]
    with session_scope() as s:
        texts = sorted(c.text for c in s.scalars(select(Chunk)))
    assert len(texts) == 2 and texts[1].startswith("teamA notes")


def test_a_file_replacing_an_earlier_one_of_its_name_says_so(tiny_model: Path, tmp_path: Path) -> None:
    for team in ("teamA", "teamB"):
        (tmp_path / team).mkdir()
        (tmp_path / team / "notes.txt").write_text(f"{team} notes about the cabinet and its warranty.")
    first = api.ingest([tmp_path / "teamA" / "notes.txt"], "p", cfg(tiny_model)).files[0]
    assert first.status == "ingested" and first.notes == []
    second = api.ingest([tmp_path / "teamB" / "notes.txt"], "p", cfg(tiny_model)).files[0]
    assert second.status == "ingested"
    assert any("replaces the earlier file of this name" in note for note in second.notes), second.notes


def test_a_link_that_loops_is_skipped_and_the_rest_ingested(tiny_model: Path, tmp_path: Path) -> None:
    src = tmp_path / "docs"
    src.mkdir()
    (src / "good.txt").write_text("A good note about the proofing cabinet's humidity tray.")
    os.symlink(src / "self", src / "self")  # ELOOP from is_file(): the walk used to stop there
    report = api.ingest([src], "p", cfg(tiny_model))
    assert [(f.path, f.status) for f in report.files] == [
        ("docs/good.txt", "ingested"),
        ("docs/self", "skipped"),
    ]
    assert "not followed" in report.files[1].problems[0]
