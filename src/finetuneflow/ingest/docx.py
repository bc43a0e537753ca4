"""DOCX main text read straight from the package's XML (no python-docx).

python-docx parses every part of the package (styles, numbering, settings, theme) when it opens a
file: ~7 ms for an empty document, 50x the cost of reading ``word/document.xml`` alone, which is
all the text lives in. We read that part (and the style names, for headings) with lxml, with entity
resolution and network access off, after the zip-bomb check in :mod:`finetuneflow.ingest.sniff`.

Rendering: paragraphs in body order, headings as ``#`` lines ('Title' and 'Heading N' styles, by
style name so renamed ids still work), tables as ``' | '``-joined rows with a horizontally merged
cell kept once, content controls (``w:sdt``) unwrapped, tabs as tabs and breaks as newlines.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

from lxml import etree

from finetuneflow.errors import ReaderError
from finetuneflow.ingest.ooxml import DAMAGED

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC = "{http://schemas.openxmlformats.org/markup-compatibility/2006}"  # mc:AlternateContent
# Untrusted XML: no DTD entities (billion laughs, XXE), no network, no multi-GB trees.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)
_MAIN_PART = "word/document.xml"
_STYLES_PART = "word/styles.xml"
_BUILTIN_HEADING = re.compile(r"Heading[1-9]|Title")


def docx_blocks(path: Path) -> list[str]:
    """The document's blocks (paragraphs, headings, tables) as Markdown-ish strings, in order.

    Raises:
        ReaderError: not a zip, or the main part is missing or not well-formed XML.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            main = _parse(archive, _MAIN_PART)
            headings = _builtin_headings(main)
            if None in headings and _STYLES_PART in archive.namelist():
                headings.update(_styled_headings(archive))
    except DAMAGED as exc:  # a damaged compressed member too (zlib.error, EOFError)
        raise ReaderError(
            f"not a readable Word document (main part {_MAIN_PART} missing or damaged: {exc}); "
            "open it in Word or LibreOffice and save it again as .docx"
        ) from exc
    _drop_fallbacks(main)
    body = main.find(f"{_W}body")
    if body is None:
        raise ReaderError(f"not a readable Word document ({_MAIN_PART} has no body)")
    return [block for block in _blocks(body, headings) if block]


def _parse(archive: zipfile.ZipFile, name: str) -> Any:
    return etree.fromstring(archive.read(name), _PARSER)


def _builtin_headings(main: Any) -> dict[str | None, int]:
    """Levels of the style ids the document uses that are Word's built-in English ids ('Heading2',
    'Title'); key None when some other id is used, whose name only ``styles.xml`` can tell.

    Word localises ids ('berschrift1' in German), so those need the names; but styles.xml is
    usually ~10x the size of a short document, so it is only parsed when needed.
    """
    levels: dict[str | None, int] = {}
    for element in main.iter(f"{_W}pStyle"):
        style_id = element.get(f"{_W}val", "")
        if _BUILTIN_HEADING.fullmatch(style_id):
            levels[style_id] = heading_level(style_id.replace("Heading", "heading "))
        else:
            levels[None] = 0
    return levels


def _heading_styles(styles: Any) -> dict[str | None, int]:
    """Paragraph style id -> heading level, for styles named 'Title' or 'heading N'."""
    levels: dict[str | None, int] = {}
    for style in styles.iter(f"{_W}style"):
        name_el = style.find(f"{_W}name")
        style_id = style.get(f"{_W}styleId")
        if name_el is None or style_id is None:
            continue
        level = heading_level(name_el.get(f"{_W}val", ""))
        if level:
            levels[style_id] = level
    return levels


def heading_level(style_name: str) -> int:
    """1-6 for 'Title' / 'Heading N' style names (any case), 0 for everything else."""
    name = style_name.strip().lower()
    if name == "title":
        return 1
    prefix, _, number = name.partition(" ")
    if prefix == "heading" and number.isdigit():
        return min(max(int(number), 1), 6)
    return 0


def _blocks(container: Any, headings: dict[str | None, int]) -> list[str]:
    """Blocks of a body, cell or content control, unwrapping ``w:sdt`` (content controls)."""
    out: list[str] = []
    for child in container:
        if child.tag == f"{_W}p":
            out.append(_paragraph(child, headings))
        elif child.tag == f"{_W}tbl":
            out.append(_table(child, headings))
        elif child.tag == f"{_W}sdt":
            content = child.find(f"{_W}sdtContent")
            if content is not None:
                out += _blocks(content, headings)
    return out


def _styled_headings(archive: zipfile.ZipFile) -> dict[str | None, int]:
    """Heading levels named by the styles part; none when it is damaged (styles only name the
    headings: the text is all in the main part, so a broken styles part costs the '#' marks)."""
    try:
        return _heading_styles(_parse(archive, _STYLES_PART))
    except DAMAGED:
        return {}


def _drop_fallbacks(main: Any) -> None:
    """Remove the ``mc:Fallback`` copies: Word 2010+ writes a text box twice, as the drawing
    (``mc:Choice``) and as a VML fallback for old readers, and both hold the same text."""
    for fallback in list(main.iter(f"{_MC}Fallback")):
        parent = fallback.getparent()
        if parent is not None:
            parent.remove(fallback)


def _paragraph(p: Any, headings: dict[str | None, int]) -> str:
    text = _runs_text(p).strip()
    style = p.find(f"{_W}pPr/{_W}pStyle")
    level = headings.get(style.get(f"{_W}val", ""), 0) if style is not None else 0
    return f"{'#' * level} {text}" if text and level else text


def _runs_text(element: Any) -> str:
    """Text of the runs under ``element`` (hyperlinks and fields included), deleted text excluded."""
    parts: list[str] = []
    for node in element.iter(f"{_W}t", f"{_W}tab", f"{_W}br", f"{_W}cr"):
        if node.tag == f"{_W}t":
            parts.append(node.text or "")
        elif node.tag == f"{_W}tab":
            parts.append("\t")
        else:
            parts.append("\n")
    return "".join(parts)


def _table(tbl: Any, headings: dict[str | None, int]) -> str:
    rows = []
    for tr in tbl.iter(f"{_W}tr"):
        if tr.getparent() is not tbl:
            continue  # a nested table's rows are rendered inside their cell
        cells = [" ".join(_blocks(tc, headings)).strip() for tc in tr.findall(f"{_W}tc")]
        rows.append(" | ".join(cells))
    return "\n".join(rows)
