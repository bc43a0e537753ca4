"""Ingest features across the step: domains, boilerplate, dedup, PII, parallel reading."""

import json
from pathlib import Path

from sqlalchemy import select

from finetuneflow import api
from finetuneflow.dataset.convert import DatasetConfig
from finetuneflow.ingest.config import IngestConfig
from finetuneflow.state import Chunk, File, session_scope

WORDS = (
    "cabinet proofing dough humidity tray heater firmware warranty support bench chat plate sensor "
    "door gasket timer mode ferment yogurt butter chocolate rest cool lamp fan filter"
).split()
SYLLABLES = ["ka", "lo", "mi", "ter", "von", "dra", "pel", "sun", "qui", "bor", "nex", "tal"]


def prose(seed: int, n: int = 120) -> str:
    """Deterministic text whose 5-grams barely overlap between seeds."""
    import random

    rng = random.Random(seed)
    words = [
        rng.choice(WORDS) if rng.random() < 0.3 else "".join(rng.choices(SYLLABLES, k=3)) for _ in range(n)
    ]
    return " ".join(words) + "."


def cfg(tiny_model: Path, **kw: object) -> IngestConfig:
    settings: dict[str, object] = {"tokenizer": str(tiny_model), "max_tokens": 4096, "overlap": 16, **kw}
    return IngestConfig(**settings)  # type: ignore[arg-type]


def chunks() -> list[Chunk]:
    with session_scope() as s:
        return list(s.scalars(select(Chunk).order_by(Chunk.id)))


def test_domain_collections_filter_and_tag(tiny_model: Path, tmp_path: Path) -> None:
    db = tmp_path / "space" / "handbooks"
    for col, domain in (("hazards", "safety"), ("ads", "marketing")):
        (db / col).mkdir(parents=True)
        (db / col / "_collection.json").write_text(json.dumps({"domain": domain, "tags": [col]}))
        (db / col / "doc1.json").write_text(json.dumps({"title": col, "body": prose(len(col))}))
    report = api.ingest([tmp_path / "space"], "d", cfg(tiny_model, domain="safety"))
    assert {Path(f.path).parent.name: f.status for f in report.files} == {
        "hazards": "ingested",
        "ads": "skipped",
    }
    (chunk,) = chunks()
    assert chunk.domain == "safety" and chunk.meta["tags"] == ["hazards"] and chunk.meta["db"] == "handbooks"
    manifest = api.build_dataset("d", DatasetConfig(min_text_tokens=1))
    row = json.loads(Path(manifest["path"], "text/train.jsonl").read_text().splitlines()[0])
    assert row["domain"] == "safety"


def test_repeated_page_headers_and_footers_are_removed(tiny_model: Path, tmp_path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    for page in range(1, 5):
        pdf.add_page()
        pdf.multi_cell(0, 6, f"ACME Confidential\n{prose(page, 60)}\nPage {page} of 4")
    pdf.output(str(tmp_path / "manual.pdf"))
    (report,) = api.ingest([tmp_path / "manual.pdf"], "b", cfg(tiny_model, max_tokens=256)).files
    assert report.status == "ingested" and report.dropped["header/footer lines"] == 8
    text = " ".join(c.text for c in chunks())
    assert "ACME Confidential" not in text and "of 4" not in text and "proofing" in text


def test_exact_and_near_duplicates_are_recorded_not_deleted(tiny_model: Path, tmp_path: Path) -> None:
    src = tmp_path / "docs"
    src.mkdir()
    original = prose(3, 150)
    words = original.split()
    words[10] = "completely-different"
    (src / "a.txt").write_text(original)
    (src / "b.txt").write_text(original.upper())  # exact after normalisation
    (src / "c.txt").write_text(" ".join(words))  # near duplicate
    (src / "d.txt").write_text(prose(11, 150))  # unrelated
    report = api.ingest([src], "x", cfg(tiny_model))
    assert report.dropped() == {"exact duplicate": 1, "near duplicate": 1}
    rows = {c.file_id: c for c in chunks()}
    with session_scope() as s:
        ids = {Path(f.path).name: f.id for f in s.scalars(select(File))}
    a, b, c, d = (rows[ids[n]] for n in ("a.txt", "b.txt", "c.txt", "d.txt"))
    assert (b.drop_reason, b.duplicate_of) == ("exact duplicate", a.id)
    assert (c.drop_reason, c.duplicate_of) == ("near duplicate", a.id)
    assert a.drop_reason is None and d.drop_reason is None
    manifest = api.build_dataset("x", DatasetConfig(min_text_tokens=1))
    assert manifest["counts"]["text/train"] == 2  # dropped chunks never reach the dataset
    # the original changes: its duplicates are no longer duplicates of anything, so they come back
    (src / "a.txt").write_text(prose(5, 150))
    api.ingest([src], "x", cfg(tiny_model))
    assert sum(ch.drop_reason is None for ch in chunks()) == 4


def test_pii_scrubbed_in_datasets_by_default_and_at_ingest_on_request(
    tiny_model: Path, tmp_path: Path
) -> None:
    note = tmp_path / "note.txt"
    note.write_text("Write to jane.doe@example.com or call +44 20 7946 0958 about firmware 2.0.1 today.")
    api.ingest([note], "p", cfg(tiny_model))
    assert "jane.doe@example.com" in chunks()[0].text  # kept as-is at ingest by default
    manifest = api.build_dataset("p", DatasetConfig(min_text_tokens=1))
    text = Path(manifest["path"], "text/train.jsonl").read_text()
    assert "[EMAIL]" in text and "[PHONE]" in text and "2.0.1" in text
    assert manifest["pii_replaced"] == {"EMAIL": 1, "PHONE": 1}
    report = api.ingest([note], "q", cfg(tiny_model, scrub_pii=True))
    assert report.pii == {"EMAIL": 1, "PHONE": 1}


def test_parallel_reading_gives_the_same_chunks(tiny_model: Path, tmp_path: Path) -> None:
    src = tmp_path / "many"
    src.mkdir()
    for i in range(12):
        (src / f"n{i:02d}.md").write_text(f"# Note {i}\n\n{prose(i + 20, 80)}")
    serial = api.ingest([src], "s", cfg(tiny_model, workers=1))
    parallel = api.ingest([src], "t", cfg(tiny_model, workers=2))
    assert [(f.path, f.status, f.chunks) for f in serial.files] == [
        (f.path, f.status, f.chunks) for f in parallel.files
    ]
    with session_scope() as s:
        by_project = [
            sorted(c.text for c in s.scalars(select(Chunk).where(Chunk.project_id == p))) for p in (1, 2)
        ]
    assert by_project[0] == by_project[1]


def test_hostile_folder_through_the_cli_then_reingest_is_a_no_op(tiny_model: Path, tmp_path: Path) -> None:
    import zipfile

    from typer.testing import CliRunner

    from finetuneflow.cli import app

    src = tmp_path / "hostile"
    src.mkdir()
    (src / "good.md").write_text(f"# Good\n\n{prose(1)}")
    (src / "page.html").write_text(
        f"<html><nav>Home | About</nav><article><p>{prose(2)}</p></article></html>"
    )
    (src / "fake.pdf").write_text("just text pretending")
    (src / "zero.txt").write_bytes(b"")
    (src / "latin1.txt").write_bytes(f"Caf\xe9 cr\xe8me {prose(3)}".encode("latin-1"))
    (src / "bad.jsonl").write_text('{"question": "Q1?", "answer": "A1."}\n{broken\n')
    (src / "binary.txt").write_bytes(bytes(range(256)) * 8)
    with zipfile.ZipFile(src / "archive.docx", "w") as z:
        z.writestr("not-word.xml", "<x/>")
    (src / "..weird name;rm -rf.txt").write_text(prose(4))
    runner = CliRunner()
    args = ["ingest", str(src), "-p", "h", "--model", str(tiny_model)]
    first = runner.invoke(app, args)
    assert first.exit_code == 1, first.output  # failures reported, the rest ingested
    for name in ("fake.pdf", "zero.txt", "binary.txt", "archive.docx"):
        assert name in first.output
    before = [(c.id, c.text) for c in chunks()]
    assert any("Café crème" in t for _, t in before) and not any("About" in t for _, t in before)
    second = runner.invoke(app, args)
    assert second.exit_code == 1 and "unchanged" in second.output
    assert [(c.id, c.text) for c in chunks()] == before  # nothing re-added, nothing lost
