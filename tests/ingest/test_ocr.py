"""Scanned PDF pages: pictures of text with no text layer, read by OCR (the ``ocr`` extra) or named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from finetuneflow.errors import ReaderError
from finetuneflow.ingest import ocr
from finetuneflow.ingest.readers import read_file
from ingest.packages import scanned_pdf

SCAN = ["The proofing cabinet keeps dough warm.", "Warranty lasts two years."]


@pytest.fixture
def no_ocr(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the ``ocr`` extra were not installed."""
    monkeypatch.setattr(ocr, "ocr_installed", lambda: False)


def test_scanned_page_is_read_by_ocr_and_keeps_its_page(tmp_path: Path) -> None:
    pytest.importorskip("rapidocr_onnxruntime")
    pytest.importorskip("pypdfium2")
    path = scanned_pdf(tmp_path / "scan.pdf", ["A typed first page about ovens.", SCAN, []])
    result = read_file(path)
    typed, scanned = result.records  # page 3 is a blank scan: nothing to keep
    assert (typed.page, typed.meta) == (1, {})
    assert scanned.page == 2 and scanned.kind == "text"
    words = scanned.text.lower()
    for word in ("proofing", "cabinet", "dough", "warranty", "two", "years"):
        assert word in words
    assert scanned.meta["ocr"] == "rapidocr-onnxruntime" and 0.8 < scanned.meta["ocr_confidence"] <= 1
    assert result.problems == []
    (read, blank) = result.notes
    confidence = r"\(mean confidence (0\.[89]\d|1\.00)\)"
    assert re.fullmatch(rf"OCR \(rapidocr-onnxruntime\) read page 2 {confidence}", read)
    assert blank == "OCR found no text on scanned page 3 (blank?)"


def test_without_the_extra_scanned_pages_are_named_with_the_install_command(
    tmp_path: Path, no_ocr: None
) -> None:
    path = scanned_pdf(tmp_path / "mixed.pdf", [SCAN, "Typed page.", SCAN, SCAN])
    result = read_file(path)
    assert [r.page for r in result.records] == [2]
    assert result.problems == [
        "pages 1, 3-4: scanned (no text layer) and not read: OCR is not installed; install it with: "
        "pip install 'finetuneflow[ocr]', then ingest again with --reread"
    ]


def test_without_the_extra_an_all_scanned_pdf_fails_with_the_reason(tmp_path: Path, no_ocr: None) -> None:
    says = r"^scan\.pdf: no extractable text \(page 1: scanned .*finetuneflow\[ocr\]"
    with pytest.raises(ReaderError, match=says):
        read_file(scanned_pdf(tmp_path / "scan.pdf", [SCAN]))


def test_a_blank_page_without_pictures_is_not_a_scan(tmp_path: Path, no_ocr: None) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.cell(0, 10, "Only page with words.")
    pdf.add_page()  # intentionally left blank
    pdf.output(str(tmp_path / "blank.pdf"))
    result = read_file(tmp_path / "blank.pdf")
    assert [r.page for r in result.records] == [1] and result.problems == []


@pytest.mark.parametrize(
    ("pages", "says"), [([3], "3"), ([1, 2, 3, 5], "1-3, 5"), ([9, 7, 8, 8], "7-9"), ([], "")]
)
def test_page_ranges(pages: list[int], says: str) -> None:
    assert ocr.page_ranges(pages) == says
