"""``ftf ingest`` on a folder holding a scanned PDF, an EPUB, a PPTX and an XLSX (one misnamed):
every chunk in the database says where it came from."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from finetuneflow.state import Chunk, File, session_scope
from ingest.packages import make_epub, make_pptx, make_xlsx, scanned_pdf


def test_ftf_ingest_reads_every_form_with_provenance(tiny_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("rapidocr_onnxruntime")
    from typer.testing import CliRunner

    from finetuneflow.cli import app

    src = tmp_path / "forms"
    src.mkdir()
    scanned_pdf(src / "scan.pdf", [["The proofing cabinet keeps dough warm.", "Warranty lasts two years."]])
    make_epub(src / "book.epub")
    make_pptx(src / "deck.pptx")
    shutil.move(make_xlsx(tmp_path / "faq.xlsx"), src / "faq.txt")  # sniffed from the content
    args = ["ingest", str(src), "-p", "forms", "--model", str(tiny_model), "--workers", "1"]
    result = CliRunner().invoke(app, args, terminal_width=250)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.replace("│", " ").split())  # the table wraps long cells
    assert "OCR (rapidocr-onnxruntime) read page 1 (mean confidence" in said
    assert "sheet 'FAQ' row 4: empty Answer" in said

    with session_scope() as session:
        files = {f.id: Path(f.path).name for f in session.scalars(select(File))}
        rows = [(files[c.file_id], c) for c in session.scalars(select(Chunk).order_by(Chunk.id))]
        where = {
            (name, c.kind, c.page, c.line, *(c.meta.get(k) for k in ("slide", "chapter", "sheet", "ocr")))
            for name, c in rows
        }
        ocr_text = next(c.text for name, c in rows if name == "scan.pdf").lower()
    assert where == {
        ("scan.pdf", "text", 1, None, None, None, None, "rapidocr-onnxruntime"),
        ("book.epub", "text", None, None, None, "Proofing", None, None),
        ("book.epub", "text", None, None, None, "Baking", None, None),
        ("book.epub", "text", None, None, None, "Starting out", None, None),
        ("deck.pptx", "text", 1, None, 1, None, None, None),
        ("deck.pptx", "text", 2, None, 2, None, None, None),
        ("faq.txt", "qa", None, 3, None, None, "FAQ", None),
        ("faq.txt", "qa", None, 5, None, None, "FAQ", None),
        ("faq.txt", "text", None, 2, None, None, "Stock", None),
    }
    assert "proofing cabinet" in ocr_text and "warranty" in ocr_text
