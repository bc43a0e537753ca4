"""OCR for the scanned pages of a PDF: pages with no text layer, only a picture of one.

With the ``ocr`` extra (``pip install 'finetuneflow[ocr]'``) a scanned page is rendered by PDFium
(``pypdfium2``: it decodes every image filter scanners use, JBIG2 and CCITT fax included, and
applies the page's rotation and crop) and read by RapidOCR (``rapidocr-onnxruntime``, whose wheel
carries the PP-OCRv4 detection, orientation and recognition models: it works offline). The record
keeps its page number; ``meta["ocr"]`` names the engine and ``meta["ocr_confidence"]`` is the mean
of the recognised lines' scores (0-1). Without the extra, the pages are named in one problem line
with the install command.

A :class:`ScannedPages` belongs to one PDF: it renders pages on demand (opening the PDF for each:
~1 ms against seconds of OCR, and nothing to close) and remembers what it did, so the reader's
report can say which pages were OCRed and how sure the engine was.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from finetuneflow.records import SourceRecord
from finetuneflow.text.clean import clean_text

OCR_INSTALL = "pip install 'finetuneflow[ocr]'"
RENDER_DPI = 150
"""Pages are rendered at this resolution. Text detection dominates the cost and grows with the
pixels: a letter page took ~5 s at 150 DPI and ~11 s at 200 on a loaded 2-core box, same words
read (PP-OCR's recogniser scales each line to 48 px high anyway)."""
MAX_RENDER_SIDE = 3000
"""... but never larger than this many pixels on a side (a poster-sized page stays ~9 MP)."""
ENGINE = "rapidocr-onnxruntime"


def is_scanned(page: Any) -> bool:
    """True when a pypdf page without a text layer shows images: a scan (or a photo of a page).

    A page without images either is blank or holds only drawings, which OCR would not help.
    """
    try:
        return len(page.images) > 0
    except Exception:  # a damaged image dictionary: let the renderer try, it is more forgiving
        return True


def ocr_installed() -> bool:
    """True when the ``ocr`` extra's packages can be imported."""
    try:
        import pypdfium2  # noqa: F401
        import rapidocr_onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class ScannedPages:
    """OCR of one PDF's scanned pages, one page at a time.

    Pages it cannot read are remembered for :meth:`problems`; pages it read, for :meth:`notes`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.read: list[tuple[int, float]] = []  # (page, mean confidence)
        self.blank: list[int] = []  # OCR found no text
        self.not_installed: list[int] = []
        self.failed: list[str] = []

    def record(self, number: int) -> SourceRecord | None:
        """The OCR text of 1-based page ``number`` as a ``text`` record; None when OCR is not
        installed, fails, or finds no text (each remembered for the report)."""
        if not ocr_installed():
            self.not_installed.append(number)
            return None
        try:
            lines = _engine()(self._render(number))[0] or []
        except Exception as exc:  # a damaged page or image stream: the other pages still count
            self.failed.append(f"page {number}: OCR failed ({type(exc).__name__}: {exc})")
            return None
        text = clean_text(_layout(lines))
        if not text:
            self.blank.append(number)
            return None
        confidence = round(sum(float(line[2]) for line in lines) / len(lines), 3)
        self.read.append((number, confidence))
        meta = {"ocr": ENGINE, "ocr_confidence": confidence}
        return SourceRecord("text", text, page=number, meta=meta)

    def _render(self, number: int) -> Any:
        """Page ``number`` as a greyscale PIL image at :data:`RENDER_DPI` (capped in size)."""
        import pypdfium2

        pdf = pypdfium2.PdfDocument(str(self.path))
        try:
            page = pdf[number - 1]
            width, height = page.get_size()  # points, 1/72 inch
            scale = min(RENDER_DPI / 72, MAX_RENDER_SIDE / max(width, height, 1.0))
            return page.render(scale=scale, grayscale=True).to_pil()
        finally:
            pdf.close()  # closes its pages too

    def problems(self) -> list[str]:
        """Lines for the file's problems: pages left unread (not installed, or OCR failed)."""
        out = list(self.failed)
        if self.not_installed:
            out.insert(
                0,
                f"{_pages(self.not_installed)}: scanned (no text layer) and not read: OCR is not "
                f"installed; install it with: {OCR_INSTALL}, then ingest again with --reread",
            )
        return out

    def notes(self) -> list[str]:
        """Lines for the file's notes: which pages were OCRed, with what confidence."""
        out = []
        if self.read:
            mean = sum(score for _, score in self.read) / len(self.read)
            low_page, low = min(self.read, key=lambda item: item[1])
            lowest = f", lowest {low:.2f} on page {low_page}" if len(self.read) > 1 else ""
            out.append(
                f"OCR ({ENGINE}) read {_pages([page for page, _ in self.read])} "
                f"(mean confidence {mean:.2f}{lowest})"
            )
        if self.blank:
            out.append(f"OCR found no text on scanned {_pages(self.blank)} (blank?)")
        return out


@lru_cache(maxsize=1)
def _engine() -> Any:
    """The RapidOCR engine, loaded once per process (~0.2 s).

    In a worker pool every core already has a process, so each engine gets one thread; alone, it
    gets onnxruntime's default (every core).
    """
    from rapidocr_onnxruntime import RapidOCR

    threads = 1 if multiprocessing.parent_process() is not None else -1
    return RapidOCR(intra_op_num_threads=threads)


def _layout(lines: list[Any]) -> str:
    """OCR boxes ``[corners, text, score]`` as lines of text: boxes whose vertical middles fall
    within one another's height are one line, read left to right."""
    boxes = []
    for corners, text, _ in lines:
        ys = [point[1] for point in corners]
        boxes.append((min(ys), max(ys), min(point[0] for point in corners), str(text)))
    boxes.sort()
    rows: list[list[tuple[float, float, float, str]]] = []
    for box in boxes:
        middle = (box[0] + box[1]) / 2
        if rows and rows[-1][0][0] <= middle <= rows[-1][0][1]:
            rows[-1].append(box)
        else:
            rows.append([box])
    return "\n".join(" ".join(box[3] for box in sorted(row, key=lambda b: b[2])) for row in rows)


def page_ranges(numbers: Iterable[int]) -> str:
    """'1-3, 5' for pages 1, 2, 3 and 5."""
    spans: list[list[int]] = []
    for number in sorted(set(numbers)):
        if spans and number == spans[-1][1] + 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    return ", ".join(str(first) if first == last else f"{first}-{last}" for first, last in spans)


def _pages(numbers: list[int]) -> str:
    """'page 3' or 'pages 1-3, 5'."""
    return f"page{'s' if len(numbers) > 1 else ''} {page_ranges(numbers)}"
