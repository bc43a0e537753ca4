"""Real EPUB / PPTX / XLSX / scanned-PDF files for the ingest tests, written by the libraries people
use to make them (ebooklib, python-pptx, openpyxl, PIL + fpdf2), and ways to spoil them."""

from __future__ import annotations

import datetime
import io
import zipfile
from collections.abc import Callable
from pathlib import Path


def make_pptx(path: Path) -> Path:
    """Three slides: title + bullets + notes; a title + table; a picture-only (empty) slide."""
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[1])
    first.shapes.title.text = "Proofing basics"
    first.placeholders[1].text = "Keep the dough at 27 degrees\nCover the tray with a lid"
    first.notes_slide.notes_text_frame.text = "Mention the humidity tray before the demo."
    second = deck.slides.add_slide(deck.slide_layouts[5])
    second.shapes.title.text = "Price list"
    table = second.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(4), Inches(1)).table
    for (row, column), text in {(0, 0): "Model", (0, 1): "Price", (1, 0): "P100", (1, 1): "199"}.items():
        table.cell(row, column).text = text
    deck.slides.add_slide(deck.slide_layouts[6])  # blank: no text at all
    deck.save(str(path))
    return path


def make_xlsx(path: Path) -> Path:
    """A Q&A sheet under a title row (one row without an answer) and a stock table of mixed types."""
    import openpyxl

    book = openpyxl.Workbook()
    faq = book.active
    faq.title = "FAQ"
    faq.append(["Frequently asked questions"])
    faq.append(["Question", "Answer", "Importance"])
    faq.append(["How warm should the cabinet be?", "27 degrees for most doughs.", 3])
    faq.append(["Is the tray dishwasher safe?", None, 1])
    faq.append(["Can I make yogurt?", "Yes, use the yogurt mode.", 2])
    stock = book.create_sheet("Stock")
    stock.append(["Item", "Count", "Since", "Ratio", "Checked"])
    stock.append(["Tray", 12, datetime.date(2024, 5, 1), 0.25, True])
    stock.append(["Lamp", 3.0, datetime.datetime(2024, 5, 2, 13, 30), None, False])
    book.create_sheet("Empty")
    book.save(str(path))
    return path


def make_epub(path: Path) -> Path:
    """Three chapters whose spine order (2, 3, 1) differs from their file names and TOC order."""
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("ftf-test")
    book.set_title("Bread at home")
    book.set_language("en")
    chapters = [
        epub.EpubHtml(title="Starting out", file_name="ch1.xhtml", content="<h1>Start</h1><p>Mix flour.</p>"),
        epub.EpubHtml(title="Proofing", file_name="ch2.xhtml", content="<h2>Proof</h2><p>Wait an hour.</p>"),
        epub.EpubHtml(title="Baking", file_name="ch3.xhtml", content="<p>Bake at 230 degrees.</p>"),
    ]
    for chapter in chapters:
        book.add_item(chapter)
    book.toc = chapters
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", chapters[1], chapters[2], chapters[0]]
    epub.write_epub(str(path), book)
    return path


def scanned_pdf(path: Path, pages: list[list[str] | str]) -> Path:
    """A PDF whose ``str`` pages are typed text and whose ``list`` pages are scans: a picture of
    those lines (black on white, 150 DPI), the way a scanner writes a page, with no text layer."""
    from fpdf import FPDF

    pdf = FPDF(unit="pt", format="letter")
    for page in pages:
        pdf.add_page()
        if isinstance(page, str):
            pdf.set_font("Helvetica", size=12)
            pdf.cell(0, 20, page)
        else:
            pdf.image(_page_picture(page), x=0, y=0, w=612, h=792)
    pdf.output(str(path))
    return path


def _page_picture(lines: list[str]):  # type: ignore[no-untyped-def]
    from PIL import Image, ImageDraw, ImageFont

    picture = Image.new("L", (1275, 1650), 255)  # US letter at 150 DPI
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=36)
    for number, line in enumerate(lines):
        draw.text((100, 150 + 70 * number), line, fill=0, font=font)
    return picture


# --- spoiling them ---------------------------------------------------------------------------


def rewrite(path: Path, changes: dict[str, Callable[[bytes], bytes] | bytes | None]) -> Path:
    """Rewrite members of the zip at ``path``: a function of the old bytes, new bytes, or None to
    remove; names not in the zip are added."""
    with zipfile.ZipFile(path) as old:
        members = {info.filename: old.read(info) for info in old.infolist()}
    for name, change in changes.items():
        if change is None:
            members.pop(name, None)
        elif callable(change):
            members[name] = change(members[name])
        else:
            members[name] = change
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as new:
        for name, data in members.items():
            new.writestr(name, data)
    return path


def with_doctype(doctype: str, replace: tuple[str, str]) -> Callable[[bytes], bytes]:
    """A change for :func:`rewrite`: put ``doctype`` before the root element and replace text."""

    def change(data: bytes) -> bytes:
        text = data.decode("utf-8").replace(*replace)
        if text.startswith("<?xml"):
            end = text.index("?>") + 2
            return (text[:end] + doctype + text[end:]).encode("utf-8")
        return (doctype + text).encode("utf-8")

    return change


def add_bomb(path: Path, member_mb: int = 30) -> Path:
    """Append a member of ``member_mb`` MiB of zeros (~1000x compressed) to a real package."""
    chunk = bytes(1 << 20)
    with (
        zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive,
        archive.open("media/zeros.bin", "w", force_zip64=True) as member,
    ):
        for _ in range(member_mb):
            member.write(chunk)
    return path


def encrypt(path: Path, password: str = "secret") -> Path:
    """Save an OOXML file with a password, as Office does (an OLE container, not a zip)."""
    from msoffcrypto.format.ooxml import OOXMLFile

    out = io.BytesIO()
    with path.open("rb") as plain:
        OOXMLFile(plain).encrypt(password, out)
    path.write_bytes(out.getvalue())
    return path


def flip_member_bytes(path: Path, member: str) -> None:
    """Damage ``member``'s compressed bytes in place, every third byte (a disk or transfer error:
    a bad CRC or an inflate error when it is read)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for k in range(start + 2, start + info.compress_size - 2, 3):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))
