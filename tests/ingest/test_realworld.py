"""Ingest files that no one here wrote: whatever the installed packages ship (PDF icons, sample CSVs,
licences, READMEs, SBOM JSON, HTML templates, Python sources, python-docx's template document).

Their content is unknown to the tests, so the checks are the invariants: every file gets a status,
every failure a reason that is not an internal error, every stored chunk fits the token budget and
points back to its file, and a second ingest changes nothing.
"""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import pytest
from sqlalchemy import select

from finetuneflow import api
from finetuneflow.ingest.config import IngestConfig
from finetuneflow.state import Chunk, File, session_scope

PER_TYPE = 6
TYPES = ("pdf", "docx", "html", "csv", "md", "txt", "json", "py", "rst", "toml")


def real_files(dest: Path) -> dict[str, int]:
    """Copy up to PER_TYPE files of each type from site-packages into ``dest``; counts per type."""
    site = Path(sysconfig.get_paths()["purelib"])
    counts: dict[str, int] = {}
    for ext in TYPES:
        found = sorted(p for p in site.rglob(f"*.{ext}") if p.is_file() and 0 < p.stat().st_size < 2_000_000)
        for k, path in enumerate(found[:: max(1, len(found) // PER_TYPE)][:PER_TYPE]):
            shutil.copyfile(path, dest / f"{ext}-{k}-{path.name}")
        counts[ext] = min(len(found), PER_TYPE)
    return counts


def test_real_world_files_all_accounted_for_and_reingest_is_a_no_op(tiny_model: Path, tmp_path: Path) -> None:
    src = tmp_path / "real"
    src.mkdir()
    counts = real_files(src)
    assert sum(counts.values()) >= 25, counts  # the environment ships enough of them to mean something
    cfg = IngestConfig(tokenizer=str(tiny_model), max_tokens=128, overlap=16, workers=1)
    report = api.ingest([src], "real", cfg)
    assert len(report.files) == len(list(src.iterdir()))
    for f in report.files:
        assert f.status in {"ingested", "partial", "failed"}, f
        if f.status == "failed":
            assert f.problems and not any("internal error" in p for p in f.problems), f
    ingested = [f for f in report.files if f.status == "ingested"]
    assert len(ingested) >= len(report.files) // 2, report.counts()
    with session_scope() as session:
        rows = session.execute(select(Chunk.kind, Chunk.n_tokens, Chunk.text, File.path).join(File)).all()
    # Document text is cut to the budget; Q&A units (a documented function and its body) stay whole,
    # and the dataset step's length check deals with the long ones.
    over = [(n, path, text[:60]) for kind, n, text, path in rows if kind == "text" and n > 128]
    assert rows and not over, over
    assert all(text.strip() for _, _, text, _ in rows)
    assert {path for *_, path in rows} <= {f.path for f in report.files}
    assert not any(text.startswith("# Data source") for *_, text, _ in rows)  # CSV notes above the header
    again = api.ingest([src], "real", cfg)
    assert {f.status for f in again.files} <= {"unchanged", "failed"}
    with session_scope() as session:
        assert len(session.scalars(select(Chunk.id)).all()) == len(rows)


@pytest.mark.parametrize("ext", ["pdf", "csv", "py"])
def test_the_environment_ships_each_kind(ext: str, tmp_path: Path) -> None:
    """Guards the test above against silently shrinking to nothing when packages change."""
    assert real_files(tmp_path)[ext] > 0


def test_real_world_and_hostile_files_together_through_the_cli(tiny_model: Path, tmp_path: Path) -> None:
    """The issue's check as a user runs it: one mixed folder, `ftf ingest`, then the same again."""
    import zipfile

    from typer.testing import CliRunner

    from finetuneflow.cli import app

    src = tmp_path / "mixed"
    src.mkdir()
    real_files(src)
    (src / "fake.pdf").write_text("plain text pretending to be a PDF")
    (src / "zero.txt").write_bytes(b"")
    (src / "binary.md").write_bytes(bytes(range(256)) * 8)
    (src / "trailing.json").write_text('{"messages": [{"role": "user", "content": "hi"}]} garbage')
    with zipfile.ZipFile(src / "bomb.docx", "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", b"<w:document>" + b"0" * 60_000_000 + b"</w:document>")
    (src / "escape.txt").symlink_to("/etc/hostname")
    runner = CliRunner()
    args = ["ingest", str(src), "-p", "mixed", "--model", str(tiny_model), "--max-tokens", "128"]
    first = runner.invoke(app, args)
    assert first.exit_code == 1, first.output  # some files failed; the exit code says so
    flat = " ".join(first.output.split())
    for name in ("fake.pdf", "zero.txt", "binary.md", "bomb.docx", "escape.txt"):
        assert name in flat, name
    with session_scope() as session:
        files = {Path(p).name: st for p, st in session.execute(select(File.path, File.status))}
        n_chunks = len(session.scalars(select(Chunk.id)).all())
    real = [p.name for p in src.iterdir() if p.name.split("-")[0] in TYPES]
    assert all(name in files for name in real)  # every real file has a row and a status
    assert sum(st == "ingested" for st in files.values()) >= len(real) // 2
    second = runner.invoke(app, args)
    assert second.exit_code == 1
    with session_scope() as session:
        assert len(session.scalars(select(Chunk.id)).all()) == n_chunks  # re-ingest is a no-op
