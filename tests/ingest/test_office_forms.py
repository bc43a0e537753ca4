"""EPUB, PPTX and XLSX: files written by ebooklib, python-pptx and openpyxl, read by our own readers."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from finetuneflow.ingest import xlsx as xlsx_module
from finetuneflow.ingest.readers import read_file
from finetuneflow.ingest.sniff import HEAD_BYTES, sniff
from ingest.packages import make_epub, make_pptx, make_xlsx, rewrite

# --- PPTX ------------------------------------------------------------------------------------


def test_pptx_one_record_per_slide_with_notes_and_tables(tmp_path: Path) -> None:
    result = read_file(make_pptx(tmp_path / "deck.pptx"))
    first, second = result.records  # the third slide has no text
    assert first.text == (
        "# Proofing basics\n\nKeep the dough at 27 degrees\nCover the tray with a lid\n\n"
        "Speaker notes: Mention the humidity tray before the demo."
    )
    assert (first.page, first.meta) == (1, {"slide": 1, "title": "Proofing basics"})
    assert second.text == "# Price list\n\nModel | Price\nP100 | 199"
    assert second.page == 2 and second.meta["slide"] == 2
    assert result.problems == []


def test_pptx_slides_follow_the_show_order_not_the_file_names(tmp_path: Path) -> None:
    from pptx import Presentation

    path = make_pptx(tmp_path / "deck.pptx")
    deck = Presentation(str(path))
    slides = deck.slides._sldIdLst
    slides.insert(0, slides[1])  # move "Price list" first, as dragging it in PowerPoint does
    deck.save(str(path))
    assert [r.meta["title"] for r in read_file(path).records] == ["Price list", "Proofing basics"]


def test_pptx_furniture_placeholders_and_hidden_slides(tmp_path: Path) -> None:
    from pptx import Presentation

    path = make_pptx(tmp_path / "deck.pptx")
    deck = Presentation(str(path))
    deck.slides[1]._element.set("show", "0")
    deck.save(str(path))
    first, second = read_file(path).records
    assert "hidden" not in first.meta and second.meta["hidden"] is True


def test_pptx_smartart_and_alternate_content_are_read(tmp_path: Path) -> None:
    """Shapes PowerPoint wraps in mc:AlternateContent, and SmartArt, whose text lives in its own part."""
    a = 'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"'
    p = 'xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main"'
    mc = 'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006"'
    dgm = 'xmlns:dgm="http://schemas.openxmlformats.org/drawingml/2006/diagram"'
    r = 'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
    box = "<p:sp><p:txBody><a:p><a:r><a:t>{}</a:t></a:r></a:p></p:txBody></p:sp>"
    alternate = (
        f"<mc:AlternateContent {mc} {p} {a}><mc:Choice Requires='p14'>{box.format('new feature')}</mc:Choice>"
        f"<mc:Fallback>{box.format('Fallback text')}</mc:Fallback></mc:AlternateContent>"
    )
    frame = (
        f"<p:graphicFrame {p} {a}><a:graphic><a:graphicData><dgm:relIds {dgm} {r} r:dm='rId9'/>"
        "</a:graphicData></a:graphic></p:graphicFrame>"
    )
    point = "<dgm:pt type='{}'><dgm:t><a:p><a:r><a:t>{}</a:t></a:r></a:p></dgm:t></dgm:pt>"
    data = (
        f"<dgm:dataModel {dgm} {a}><dgm:ptLst>{point.format('doc', '')}{point.format('node', 'Mix')}"
        f"{point.format('parTrans', 'connector')}{point.format('node', 'Knead')}</dgm:ptLst></dgm:dataModel>"
    )
    rel = (
        '<Relationship Id="rId9" Target="../diagrams/data1.xml" '
        'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/diagramData"/>'
    )
    path = rewrite(
        make_pptx(tmp_path / "deck.pptx"),
        {
            "ppt/slides/slide2.xml": lambda xml: xml.replace(
                b"</p:spTree>", (alternate + frame).encode() + b"</p:spTree>"
            ),
            "ppt/slides/_rels/slide2.xml.rels": lambda xml: xml.replace(
                b"</Relationships>", rel.encode() + b"</Relationships>"
            ),
            "ppt/diagrams/data1.xml": data.encode(),
        },
    )
    second = read_file(path).records[1]
    assert second.text.endswith("P100 | 199\n\nFallback text\n\nMix\nKnead")


# --- XLSX ------------------------------------------------------------------------------------


def test_xlsx_qa_sheet_becomes_pairs_like_csv(tmp_path: Path) -> None:
    result = read_file(make_xlsx(tmp_path / "book.xlsx"))
    qa = [r for r in result.records if r.kind == "qa"]
    assert [(r.line, r.messages) for r in qa] == [
        (
            3,
            [
                {"role": "user", "content": "How warm should the cabinet be?"},
                {"role": "assistant", "content": "27 degrees for most doughs."},
            ],
        ),
        (
            5,
            [
                {"role": "user", "content": "Can I make yogurt?"},
                {"role": "assistant", "content": "Yes, use the yogurt mode."},
            ],
        ),
    ]
    assert qa[0].meta == {"importance": 3.0, "sheet": "FAQ"}
    assert result.problems == ["sheet 'FAQ' row 4: empty Answer"]


def test_xlsx_other_sheets_are_tables_as_text_with_sheet_and_rows(tmp_path: Path) -> None:
    (table,) = [r for r in read_file(make_xlsx(tmp_path / "book.xlsx")).records if r.kind == "text"]
    assert table.text == (
        "## Stock\nItem | Count | Since | Ratio | Checked\n"
        "Tray | 12 | 2024-05-01 | 0.25 | TRUE\nLamp | 3 | 2024-05-02T13:30:00 |  | FALSE"
    )
    assert table.line == 2 and table.meta == {"sheet": "Stock", "rows": [2, 3]}


def test_xlsx_big_table_is_cut_into_blocks_that_repeat_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openpyxl

    monkeypatch.setattr(xlsx_module, "TABLE_BLOCK_CHARS", 60)
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Log"
    sheet.append(["Day", "Event"])
    for day in range(1, 21):
        sheet.append([day, f"event number {day}"])
    book.save(str(tmp_path / "log.xlsx"))
    records = read_file(tmp_path / "log.xlsx").records
    assert len(records) > 3
    assert all(r.text.startswith("## Log\nDay | Event\n") for r in records)
    rows = [r.meta["rows"] for r in records]
    assert rows[0][0] == 2 and rows[-1][1] == 21
    assert all(later[0] == earlier[1] + 1 for earlier, later in zip(rows, rows[1:], strict=False))
    assert [r.line for r in records] == [first for first, _ in rows]


def test_xlsx_rich_text_inline_strings_and_a_far_away_cell(tmp_path: Path) -> None:
    from openpyxl import Workbook
    from openpyxl.cell.rich_text import CellRichText, TextBlock
    from openpyxl.cell.text import InlineFont

    book = Workbook()
    sheet = book.active
    sheet.append(["Note"])
    sheet["A2"] = CellRichText(["plain ", TextBlock(InlineFont(b=True), "bold")])
    sheet["XFD3"] = "beyond the column limit"
    book.save(str(tmp_path / "rich.xlsx"))
    (record,) = read_file(tmp_path / "rich.xlsx").records
    assert record.text == "## Sheet\nNote\nplain bold"


# --- EPUB ------------------------------------------------------------------------------------


def test_epub_chapters_in_spine_order_with_toc_titles(tmp_path: Path) -> None:
    records = read_file(make_epub(tmp_path / "book.epub")).records
    assert [(r.meta["chapter"], r.text) for r in records] == [
        ("Proofing", "## Proof\n\nWait an hour."),
        ("Baking", "Bake at 230 degrees."),
        ("Starting out", "# Start\n\nMix flour."),
    ]
    assert [r.meta["chapter_index"] for r in records] == [2, 3, 4]  # 1 is the nav page: no text
    assert records[0].meta["part"].endswith("ch2.xhtml")


def test_epub_without_toc_uses_the_first_heading(tmp_path: Path) -> None:
    path = make_epub(tmp_path / "book.epub")
    names = [n for n in zipfile.ZipFile(path).namelist() if n.endswith(("nav.xhtml", ".ncx"))]
    rewrite(path, dict.fromkeys(names))
    titles = [r.meta["chapter"] for r in read_file(path).records]
    assert titles[0] == "Proof" and titles[2] == "Start"


def test_epub2_table_of_contents_from_the_ncx(tmp_path: Path) -> None:
    path = make_epub(tmp_path / "book.epub")
    rewrite(path, {"EPUB/nav.xhtml": b"<html><body><p>Contents</p></body></html>"})  # no <nav>
    titles = [r.meta["chapter"] for r in read_file(path).records]
    assert titles == ["", "Proofing", "Baking", "Starting out"]  # the contents page has no title


def test_epub_chapter_header_and_footnotes_are_kept(tmp_path: Path) -> None:
    """A book is not a web page: <header> holds the chapter title, <aside> a footnote."""
    chapter = (
        '<html><body><section class="chapter sidebar"><header><h1>One</h1></header><p>Body text.</p>'
        '<aside epub:type="footnote">A footnote.</aside><nav><a href="#x">Back</a></nav></section>'
        "</body></html>"
    )
    path = rewrite(make_epub(tmp_path / "book.epub"), {"EPUB/ch1.xhtml": chapter.encode()})
    assert read_file(path).records[-1].text == "# One\n\nBody text.\n\nA footnote."


# --- sniffed from the content ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "kind"), [(make_pptx, ".pptx"), (make_xlsx, ".xlsx"), (make_epub, ".epub")], ids=str
)
def test_packages_are_sniffed_from_content_not_the_name(tmp_path: Path, make, kind: str) -> None:  # type: ignore[no-untyped-def]
    made = make(tmp_path / f"real{kind}")
    renamed = tmp_path / "download.bin"
    shutil.copy(made, renamed)
    with renamed.open("rb") as handle:
        assert sniff(renamed, handle.read(HEAD_BYTES), {".bin"}) == kind
    assert read_file(renamed).records == read_file(made).records


def hand_made_xlsx(path: Path, cells: str, styles: str = "", date1904: bool = False) -> Path:
    """A minimal workbook as Excel writes it (shared strings, styles), one sheet holding ``cells``."""
    main = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    strings = ["Question", "Answer", "What is the warranty?", "Two years.", "Rich ", "text", "ignored"]
    items = "".join(f"<si><t>{text}</t></si>" for text in strings[:4])
    items += "<si><r><t>Rich </t></r><r><t>text</t></r><rPh><t>ignored</t></rPh></si>"
    with zipfile.ZipFile(path, "w") as archive:
        pr = '<workbookPr date1904="1"/>' if date1904 else ""
        archive.writestr(
            "xl/workbook.xml",
            f'<workbook {main} xmlns:r="{rel}">{pr}<sheets><sheet name="Data" sheetId="1" r:id="rId1"/>'
            "</sheets></workbook>",
        )
        archive.writestr(
            "xl/_rels/workbook.xml.rels",
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId2" Type="{rel}/sharedStrings" Target="sharedStrings.xml"/>'
            f'<Relationship Id="rId3" Type="{rel}/styles" Target="/xl/styles.xml"/></Relationships>',
        )
        archive.writestr("xl/sharedStrings.xml", f"<sst {main}>{items}</sst>")
        archive.writestr("xl/styles.xml", f"<styleSheet {main}>{styles}</styleSheet>")
        sheet = f"<worksheet {main}><sheetData>{cells}</sheetData></worksheet>"
        archive.writestr("xl/worksheets/sheet1.xml", sheet)
    return path


def test_xlsx_shared_strings_qa_sheet_as_excel_writes_it(tmp_path: Path) -> None:
    cells = (
        '<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c></row>'
        '<row r="2"><c r="A2" t="s"><v>2</v></c><c r="B2" t="s"><v>3</v></c></row>'
        '<row r="3"><c r="A3" t="s"><v>4</v></c><c r="B3" t="s"><v>99</v></c></row>'
    )
    result = read_file(hand_made_xlsx(tmp_path / "faq.xlsx", cells))
    (record,) = result.records
    assert record.messages == [
        {"role": "user", "content": "What is the warranty?"},
        {"role": "assistant", "content": "Two years."},
    ]
    assert record.line == 2 and record.meta == {"sheet": "Data"}
    assert result.problems == ["sheet 'Data' row 3: empty Answer"]  # index 99: no such string


def test_xlsx_cells_show_what_excel_shows(tmp_path: Path) -> None:
    styles = (
        '<numFmts><numFmt numFmtId="164" formatCode="dd/mm/yyyy;@"/>'
        '<numFmt numFmtId="165" formatCode="&quot;days&quot; 0.0"/></numFmts>'
        '<cellXfs><xf numFmtId="0"/><xf numFmtId="14"/><xf numFmtId="164"/><xf numFmtId="165"/></cellXfs>'
    )
    cells = (  # no "r" on row 1's cells or on row 2: positions count from the previous one
        "<row><c><v>1</v></c><c t='s'><v>4</v></c><c t='b'><v>1</v></c><c t='e'><v>#DIV/0!</v></c></row>"
        '<row><c s="1"><v>45413</v></c><c r="C2" s="2"><v>45413.5</v></c><c r="D2" s="3"><v>2.5</v></c>'
        '<c r="E2" t="str"><f>A1*2</f><v>two</v></c><c r="F2" t="inlineStr"><is><t>inline</t></is></c></row>'
    )
    (record,) = read_file(hand_made_xlsx(tmp_path / "cells.xlsx", cells, styles)).records
    assert record.text == (
        "## Data\n1 | Rich text | TRUE\n2024-05-01 |  | 2024-05-01T12:00:00 | 2.5 | two | inline"
    )
    (record,) = read_file(hand_made_xlsx(tmp_path / "mac.xlsx", cells, styles, date1904=True)).records
    assert "2028-05-02 |" in record.text  # the 1904 date system counts from 1904-01-01


def test_xlsx_escaped_characters_read_as_excel_shows_them(tmp_path: Path) -> None:
    # Excel writes a cell's Windows line break as _x000D_ and a typed "_x0041_" as _x005F_x0041_;
    # they reached the dataset as written
    cells = (
        '<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c></row>'
        '<row r="2"><c r="A2" t="inlineStr"><is><t>How long?_x000D_\nIn days_x0021_</t></is></c>'
        '<c r="B2" t="inlineStr"><is><t>Keep _x005F_x0041_ and _x005f_ as typed, _xD83D__xDE00_.</t></is>'
        '</c></row><row r="3"><c r="A3" t="str"><f>A2</f><v>Tab_x0009_stop</v></c>'
        '<c r="B3" t="inlineStr"><is><t>_x00_ and _xZZZZ_ stay</t></is></c></row>'
    )
    records = read_file(hand_made_xlsx(tmp_path / "escaped.xlsx", cells)).records
    assert [r.messages for r in records] == [
        [
            {"role": "user", "content": "How long?\nIn days!"},
            {"role": "assistant", "content": "Keep _x0041_ and _ as typed, \U0001f600."},
        ],
        [
            {"role": "user", "content": "Tab\tstop"},
            {"role": "assistant", "content": "_x00_ and _xZZZZ_ stay"},
        ],
    ]
