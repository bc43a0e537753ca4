"""Build troubleshooting.pdf from troubleshooting.md (Part 2 of the Proofwell P3 handbook).

Usage (from anywhere):

    python examples/quickstart/source/make_pdf.py

Needs fpdf2 (``pip install fpdf2``). Only the core Helvetica font is used, so the
source text must be Latin-1; plain ASCII is recommended. The output is
deterministic: the same source always gives byte-identical PDF output.

The Markdown subset understood here is small on purpose:
``# title``, ``## heading``, ``- bullet``, ``1. numbered item``, blank-line
separated paragraphs, and ``**bold**`` inside any of them.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from pathlib import Path

from fpdf import FPDF

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "troubleshooting.md"
TARGET = HERE.parent / "data" / "troubleshooting.pdf"

# Fixed metadata so that re-running the script produces the same bytes.
CREATION_DATE = dt.datetime(2025, 3, 3, 9, 0, 0, tzinfo=dt.UTC)
TITLE = "Larkhollow Proofwell P3 Handbook - Part 2"
FOOTER = "Larkhollow Proofwell P3 - Troubleshooting, Error Codes, Warranty and Support"

BODY_SIZE = 10.5
LINE_H = 5.4


class HandbookPDF(FPDF):
    def footer(self) -> None:
        self.set_y(-14)
        self.set_font("Helvetica", "", 8)
        self.set_text_color(110, 110, 110)
        self.cell(0, 5, FOOTER, align="L")
        self.set_x(self.l_margin)
        self.cell(0, 5, f"Page {self.page_no()} of {{nb}}", align="R")
        self.set_text_color(0, 0, 0)


def parse_blocks(text: str) -> list[tuple[str, str]]:
    """Split the Markdown source into (kind, text) blocks."""
    blocks: list[tuple[str, str]] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            blocks.append(("p", " ".join(para)))
            para.clear()

    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            flush()
        elif line.startswith("## "):
            flush()
            blocks.append(("h2", line[3:]))
        elif line.startswith("# "):
            flush()
            blocks.append(("h1", line[2:]))
        elif line.startswith("- "):
            flush()
            blocks.append(("li", line[2:]))
        elif re.match(r"^\d+\. ", line):
            flush()
            num, rest = line.split(" ", 1)
            blocks.append(("ol", f"{num}\t{rest}"))
        elif blocks and blocks[-1][0] in ("li", "ol") and not para and raw.startswith("  "):
            # continuation line of a list item
            kind, prev = blocks[-1]
            blocks[-1] = (kind, prev + " " + line)
        else:
            para.append(line)
    flush()
    return blocks


def check_latin1(text: str) -> None:
    for lineno, line in enumerate(text.splitlines(), 1):
        try:
            line.encode("latin-1")
        except UnicodeEncodeError as exc:
            bad = line[exc.start : exc.end]
            sys.exit(f"{SOURCE.name}:{lineno}: character {bad!r} is not Latin-1 (core fonts only)")


def build(source: Path = SOURCE, target: Path = TARGET) -> Path:
    text = source.read_text(encoding="utf-8")
    check_latin1(text)

    pdf = HandbookPDF(format="A4", unit="mm")
    pdf.set_creation_date(CREATION_DATE)
    pdf.set_title(TITLE)
    pdf.set_author("Larkhollow Appliances Ltd")
    pdf.set_subject("Troubleshooting, error codes, warranty and support")
    pdf.set_creator("examples/quickstart/make_pdf.py")
    pdf.set_producer("fpdf2")
    pdf.set_margins(20, 18, 20)
    pdf.set_auto_page_break(auto=True, margin=20)
    pdf.add_page()

    width = pdf.w - pdf.l_margin - pdf.r_margin
    for kind, body in parse_blocks(text):
        if kind == "h1":
            pdf.set_font("Helvetica", "B", 17)
            pdf.multi_cell(width, 8, body, new_x="LMARGIN", new_y="NEXT")
            pdf.set_draw_color(150, 150, 150)
            pdf.line(pdf.l_margin, pdf.get_y() + 1, pdf.l_margin + width, pdf.get_y() + 1)
            pdf.ln(4)
        elif kind == "h2":
            if pdf.get_y() > pdf.h - 45:  # keep a heading with its first lines
                pdf.add_page()
            pdf.ln(2)
            pdf.set_font("Helvetica", "B", 13)
            pdf.multi_cell(width, 7, body, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1)
        elif kind in ("li", "ol"):
            if kind == "li":
                marker, item = "-", body
            else:
                marker, item = body.split("\t", 1)
            pdf.set_font("Helvetica", "", BODY_SIZE)
            pdf.set_x(pdf.l_margin + 3)
            pdf.cell(6, LINE_H, marker)
            pdf.multi_cell(width - 9, LINE_H, item, markdown=True, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1.2)
        else:
            pdf.set_font("Helvetica", "", BODY_SIZE)
            pdf.multi_cell(width, LINE_H, body, markdown=True, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2.5)

    pdf.output(str(target))
    return target


if __name__ == "__main__":
    out = build()
    print(f"wrote {out}")
