"""The direct DOCX reader on hand-written WordprocessingML: what python-docx-made files do not show."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from finetuneflow.errors import ReaderError
from finetuneflow.ingest.docx import docx_blocks, heading_level
from finetuneflow.ingest.readers import read_file
from ingest.packages import flip_member_bytes

NS = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
STYLES = (
    f"<w:styles {NS}>"
    '<w:style w:type="paragraph" w:styleId="berschrift1"><w:name w:val="heading 1"/></w:style>'
    '<w:style w:type="paragraph" w:styleId="Titel"><w:name w:val="Title"/></w:style>'
    '<w:style w:type="paragraph" w:styleId="Quote"><w:name w:val="Quote"/></w:style>'
    "</w:styles>"
)


def para(text: str, style: str = "") -> str:
    props = f'<w:pPr><w:pStyle w:val="{style}"/></w:pPr>' if style else ""
    return f"<w:p>{props}<w:r><w:t xml:space='preserve'>{text}</w:t></w:r></w:p>"


def make_docx(path: Path, body: str, styles: str | None = STYLES, prolog: str = "") -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        document = f"{prolog}<w:document {NS}><w:body>{body}</w:body></w:document>"
        archive.writestr("word/document.xml", document)
        if styles is not None:
            archive.writestr("word/styles.xml", styles)
    return path


def test_headings_follow_style_names_not_ids(tmp_path: Path) -> None:
    body = para("Handbuch", "Titel") + para("Einleitung", "berschrift1") + para("Zitat", "Quote")
    assert docx_blocks(make_docx(tmp_path / "de.docx", body)) == ["# Handbuch", "# Einleitung", "Zitat"]


def test_merged_cells_once_and_nested_tables_inside_their_cell(tmp_path: Path) -> None:
    inner = "<w:tbl><w:tr><w:tc>" + para("inner") + "</w:tc></w:tr></w:tbl>"
    body = (
        "<w:tbl>"
        "<w:tr><w:tc><w:tcPr><w:gridSpan w:val='2'/></w:tcPr>" + para("wide") + "</w:tc></w:tr>"
        "<w:tr><w:tc>" + para("a") + "</w:tc><w:tc>" + para("b") + inner + "</w:tc></w:tr>"
        "</w:tbl>"
    )
    assert docx_blocks(make_docx(tmp_path / "t.docx", body)) == ["wide\na | b inner"]


def test_content_controls_hyperlinks_tabs_and_breaks(tmp_path: Path) -> None:
    body = (
        "<w:sdt><w:sdtContent>" + para("In a control") + "</w:sdtContent></w:sdt>"
        "<w:p><w:hyperlink><w:r><w:t>link</w:t></w:r></w:hyperlink><w:r><w:tab/><w:t>x</w:t><w:br/>"
        "<w:t>y</w:t></w:r><w:del><w:r><w:delText>gone</w:delText></w:r></w:del></w:p>"
    )
    assert docx_blocks(make_docx(tmp_path / "c.docx", body, styles=None)) == ["In a control", "link\tx\ny"]


def test_entities_are_not_expanded(tmp_path: Path) -> None:
    """A DTD entity (the billion-laughs / XXE vector) is left unresolved, never read from disk."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    prolog = f'<!DOCTYPE d [<!ENTITY xxe SYSTEM "file://{secret}">]>'
    path = make_docx(tmp_path / "x.docx", "<w:p><w:r><w:t>a&xxe;b</w:t></w:r></w:p>", prolog=prolog)
    assert "TOP SECRET" not in " ".join(docx_blocks(path))


@pytest.mark.parametrize(
    ("members", "says"),
    [
        ({"word/other.xml": "<x/>"}, r"no word/document\.xml.*so it is not a Word \.docx"),
        ({"word/document.xml": "<w:document"}, r"damaged.*save it again as \.docx"),
    ],
    ids=["no main part", "broken xml"],
)
def test_damaged_packages_say_how_to_fix(tmp_path: Path, members: dict[str, str], says: str) -> None:
    path = tmp_path / "bad.docx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(ReaderError, match=says):
        read_file(path)


@pytest.mark.parametrize(
    ("name", "level"), [("Title", 1), ("heading 3", 3), ("Heading 9", 6), ("Normal", 0), ("Heading", 0)]
)
def test_heading_levels(name: str, level: int) -> None:
    assert heading_level(name) == level


def test_a_text_box_word_writes_twice_is_read_once(tmp_path: Path) -> None:
    """Word 2010+ writes a text box as a drawing (mc:Choice) and again as VML for old readers
    (mc:Fallback): one flyer line, not two."""
    mc = 'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006"'
    box = "<w:txbxContent>" + para("Call 555-0100 for service.") + "</w:txbxContent>"
    body = (
        f"<w:p><w:r><w:t>Flyer:</w:t></w:r><w:r><mc:AlternateContent {mc}>"
        f"<mc:Choice Requires='wps'><w:drawing>{box}</w:drawing></mc:Choice>"
        f"<mc:Fallback><w:pict>{box}</w:pict></mc:Fallback>"
        "</mc:AlternateContent></w:r></w:p>"
    )
    (text,) = docx_blocks(make_docx(tmp_path / "flyer.docx", body))
    assert text.count("Call 555-0100") == 1, text


def test_a_damaged_member_is_a_clear_error_and_damaged_styles_only_cost_the_headings(tmp_path: Path) -> None:
    body = "".join(para(f"Paragraph {i} about the label printer.") for i in range(50))
    path = tmp_path / "broken.docx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", f"<w:document {NS}><w:body>{body}</w:body></w:document>")
    flip_member_bytes(path, "word/document.xml")
    with pytest.raises(ReaderError, match="save it again as .docx"):
        docx_blocks(path)
    styled = tmp_path / "de.docx"
    doc = f"<w:document {NS}><w:body>{para('Einleitung', 'berschrift1')}{body}</w:body></w:document>"
    with zipfile.ZipFile(styled, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", doc)
        archive.writestr("word/styles.xml", STYLES * 40)
    flip_member_bytes(styled, "word/styles.xml")
    blocks = docx_blocks(styled)  # the text is all in the main part: read, without '#' marks
    assert blocks[0] == "Einleitung" and len(blocks) == 51
