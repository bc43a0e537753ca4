"""PowerPoint (.pptx) slides and speaker notes, one ``text`` record per slide, read from the XML.

Slides come in the order of ``ppt/presentation.xml``'s slide list (the order of the show, not the
order of the files in the zip). A slide's text is its shapes in the order the slide stores them:
the title as a ``#`` line, text boxes and placeholders paragraph by paragraph, tables as
``' | '``-joined rows, SmartArt diagrams node by node, groups and ``mc:AlternateContent`` (its
fallback) unwrapped. Slide-number, date and footer placeholders are furniture and
left out. The notes page's body follows as ``"Speaker notes: ..."``. ``page`` and ``meta["slide"]``
hold the 1-based slide number; ``meta["hidden"]`` marks a slide hidden from the show.

python-pptx is not needed to read: it loads every part of the package (media included) to open a
file; only the slide and notes XML hold text, and they are parsed as in
:mod:`finetuneflow.ingest.ooxml`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from finetuneflow.errors import ReaderError
from finetuneflow.ingest.ooxml import Package, local_name, open_package
from finetuneflow.records import SourceRecord
from finetuneflow.text.clean import clean_text

_P = "{http://schemas.openxmlformats.org/presentationml/2006/main}"
_A = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_MC = "{http://schemas.openxmlformats.org/markup-compatibility/2006}"
_DGM = "{http://schemas.openxmlformats.org/drawingml/2006/diagram}"
_MAIN_PART = "ppt/presentation.xml"
FIX = "open it in PowerPoint or LibreOffice Impress and save it again as .pptx"
_TITLES = frozenset({"title", "ctrTitle"})
_FURNITURE = frozenset({"sldNum", "dt", "ftr", "hdr", "sldImg"})  # numbers, dates, footers, thumbnails
NOTES_LABEL = "Speaker notes:"


def pptx_records(path: Path) -> Iterator[SourceRecord | str]:
    """One record per slide with text (slide text, then its speaker notes), or a problem line for a
    slide that cannot be read (``"slide 4: part ppt/slides/slide4.xml is damaged ..."``).

    Raises:
        ReaderError: a zip bomb, a damaged zip, or no readable ``ppt/presentation.xml``.
    """
    with open_package(path, FIX) as package:
        presentation = package.xml(_MAIN_PART)
        slides = package.relationships(_MAIN_PART)
        listed = presentation.findall(f"{_P}sldIdLst/{_P}sldId")
        for number, slide_id in enumerate(listed, start=1):
            target = slides.get(slide_id.get(f"{_R}id", ""))
            if target is None:
                yield f"slide {number}: listed but missing from the package"
                continue
            try:
                record = _slide_record(package, target[1], number)
            except ReaderError as exc:
                yield f"slide {number}: {exc}"
                continue
            if record is not None:
                yield record


def _slide_record(package: Package, part: str, number: int) -> SourceRecord | None:
    """The slide's text and notes as a record; None for a slide without any text (a picture)."""
    slide = package.xml(part)
    related = package.relationships(part)
    blocks = _shape_blocks(slide.find(f"{_P}cSld/{_P}spTree"), _Diagrams(package, related))
    notes_part = next((target for kind, target in related.values() if kind == "notesSlide"), None)
    notes = _notes_text(package, notes_part) if notes_part else ""
    if notes:
        blocks.append(f"{NOTES_LABEL} {notes}")
    text = clean_text("\n\n".join(block for block in blocks if block))
    if not text:
        return None
    title = next((b[2:] for b in blocks if b.startswith("# ")), "")
    meta: dict[str, Any] = {"slide": number}
    if title:
        meta["title"] = title
    if slide.get("show") in ("0", "false"):
        meta["hidden"] = True
    return SourceRecord("text", text, page=number, meta=meta)


def _notes_text(package: Package, part: str) -> str:
    """The text of a notes page's body placeholder (what the speaker typed), as one string."""
    notes = package.xml(part)
    tree = notes.find(f"{_P}cSld/{_P}spTree")
    if tree is None:
        return ""
    bodies = [shape for shape in tree.iter(f"{_P}sp") if _placeholder(shape) == "body"]
    # Notes pages written by other tools may not mark the body; then every non-furniture shape counts.
    shapes = bodies or [shape for shape in tree.iter(f"{_P}sp") if _placeholder(shape) not in _FURNITURE]
    return "\n".join(text for text in (_text_body(shape) for shape in shapes) if text).strip()


class _Diagrams:
    """The text of a slide's SmartArt diagrams, by relationship id of their data part."""

    def __init__(self, package: Package, related: dict[str, tuple[str, str]]) -> None:
        self.package = package
        self.related = related

    def text(self, frame: Any) -> str:
        """One line per diagram node of the SmartArt in a graphic frame ('' when there is none)."""
        ids = frame.find(f".//{_DGM}relIds")
        kind, part = self.related.get(ids.get(f"{_R}dm", "") if ids is not None else "", ("", ""))
        if kind != "diagramData":
            return ""
        points = self.package.xml(part).iter(f"{_DGM}pt")
        # connector points (parTrans, sibTrans) hold no text of their own
        nodes = [_paragraphs(pt) for pt in points if pt.get("type", "node") in ("node", "asst")]
        return "\n".join(node for node in nodes if node)


def _shape_blocks(tree: Any, diagrams: _Diagrams) -> list[str]:
    """Blocks of the shapes under a shape tree or group, in stored order; groups are unwrapped."""
    if tree is None:
        return []
    blocks: list[str] = []
    for shape in tree:
        name = local_name(shape)
        if name == "grpSp":
            blocks += _shape_blocks(shape, diagrams)
        elif name == "AlternateContent":  # newer features, with a fallback every reader understands
            choice = shape.find(f"{_MC}Fallback")
            blocks += _shape_blocks(choice if choice is not None else shape.find(f"{_MC}Choice"), diagrams)
        elif name == "sp":
            kind = _placeholder(shape)
            if kind in _FURNITURE:
                continue
            text = _text_body(shape)
            if text and kind in _TITLES:
                text = "# " + " ".join(text.split())
            blocks.append(text)
        elif name == "graphicFrame":
            blocks += [_table(table) for table in shape.iter(f"{_A}tbl")]
            blocks.append(diagrams.text(shape))
    return blocks


def _placeholder(shape: Any) -> str | None:
    """The placeholder type of a shape ('title', 'body', 'sldNum', ...), 'body' for an untyped
    placeholder, None for a shape that is no placeholder."""
    placeholder = shape.find(f"{_P}nvSpPr/{_P}nvPr/{_P}ph")
    return None if placeholder is None else placeholder.get("type", "body")


def _text_body(shape: Any) -> str:
    """The paragraphs of a shape's text body, one per line."""
    body = shape.find(f"{_P}txBody")
    return _paragraphs(body) if body is not None else ""


def _paragraphs(body: Any) -> str:
    """Text of the ``a:p`` paragraphs under ``body``: runs and fields joined, ``a:br`` as newlines."""
    lines = []
    for paragraph in body.iter(f"{_A}p"):
        parts = [
            (node.text or "") if node.tag == f"{_A}t" else "\n"
            for node in paragraph.iter(f"{_A}t", f"{_A}br")
        ]
        lines.append("".join(parts).rstrip())
    return "\n".join(lines).strip()


def _table(table: Any) -> str:
    """One line per table row, cells joined with ' | ' (a merged cell's continuation left out)."""
    rows = []
    for row in table.iter(f"{_A}tr"):
        cells = [
            " ".join(_paragraphs(cell).split())
            for cell in row.iter(f"{_A}tc")
            if cell.get("hMerge") not in ("1", "true") and cell.get("vMerge") not in ("1", "true")
        ]
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)
