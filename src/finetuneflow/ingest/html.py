"""HTML pages to Markdown-ish main text: the article, not the menus, banners and footers around it.

Parsed with lxml (libxml2's HTML parser, in C): building a BeautifulSoup tree in Python cost
~0.7 ms per small page, several times the rest of reading it. lxml keeps text as ``.text`` (before
the first child) and ``.tail`` (after an element, up to its next sibling); the walkers below read
both, and removing an element never removes its tail, which belongs to the parent.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from lxml import etree

from finetuneflow.errors import ReaderError
from finetuneflow.records import SourceRecord
from finetuneflow.text.clean import clean_text

# Elements that never hold text to learn from, in any document.
_NOT_TEXT_TAGS = ("script", "style", "noscript", "svg", "template", "iframe")
# ... and those that, on a web page, are its furniture rather than its content.
_DROPPED_TAGS = (*_NOT_TEXT_TAGS, "nav", "header", "footer", "aside", "form")
# id / class words of page furniture. "nav" and "menu" must start a word ("navbar", "main-menu")
# so that "unavailable" or "canvas" survive; the others are specific enough anywhere.
_BOILERPLATE = re.compile(r"(?:^|[^a-z])(?:nav|menu)|sidebar|footer|cookie|banner", re.IGNORECASE)
# Containers we never drop by class, or the whole page could go ("<body class='has-sidebar'>").
_PROTECTED = frozenset({"html", "body", "main", "article"})
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
# header / footer / aside only get this far in a book's chapter (a web page drops them first).
_CONTAINERS = frozenset(
    {"html", "body", "main", "article", "section", "div", "ul", "ol", "dl", "figure", "center", "details"}
    | {"header", "footer", "aside"}
)
_LEAF_BLOCKS = frozenset(
    {"p", "pre", "blockquote", "dt", "dd", "figcaption", "caption", "summary", "address"}
)
_BLOCKS = _CONTAINERS | _LEAF_BLOCKS | frozenset(_HEADINGS) | {"li", "table", "hr"}
# Stands for a <br> inside a run of inline text, whose own newlines are just source layout. A
# private-use character: lxml refuses control characters in text, and pages never mean this one.
_BREAK = "\ue000"


class CutShort(ReaderError):
    """The HTML parser stopped before the page's end (a resource limit): not a page without text."""


def html_record(markup: str, web_page: bool = True) -> SourceRecord:
    """One ``text`` record of the page's main text; ``meta["title"]`` holds its ``<title>``.

    Headings become '#' lines, list items '- ' lines, table rows ' | '-joined cells. A web page
    loses its furniture (navigation, headers, footers, asides, forms, elements whose class names a
    menu or banner); a book's chapter (``web_page=False``) keeps all but navigation, since its
    ``<header>`` holds the chapter title and its ``<aside>`` the footnotes.

    Raises:
        CutShort: the parser stopped part way (elements nested over 2048 deep).
        ReaderError: no text is left once scripts, navigation and other page furniture are removed.
    """
    root = _parse(markup.replace(_BREAK, ""))
    blocks: list[str] = []
    title = ""
    if root is not None:
        title_tag = next(root.iter("title"), None)
        title = _squash(_text(title_tag)) if title_tag is not None else ""
        if web_page:
            _drop_furniture(root)
        else:
            etree.strip_elements(root, *_NOT_TEXT_TAGS, "nav", with_tail=False)
        _mark_breaks(root)
        for main in _main_roots(root):
            _run(_collect(main, blocks, depth=0))
    text = clean_text("\n\n".join(block for block in blocks if block))
    if not text:
        raise ReaderError("the page has no readable text once navigation, scripts and styles are removed")
    meta = {"title": title} if title else {}
    return SourceRecord("text", text, meta=meta)


def _parse(markup: str) -> etree._Element | None:
    """The page's root element, or None for a page without any (empty or blank markup)."""
    # "replace": a lone surrogate is not UTF-8, and libxml2 would stop at the bytes it cannot read.
    data = markup.encode("utf-8", "replace")
    if not data.strip():
        return None
    # The markup is already decoded (readers detect the encoding), so libxml2 gets UTF-8 and any
    # <meta charset> is ignored. Comments and processing instructions are never text. huge_tree:
    # text nodes over 10 MB are read, not cut. A parser per call (~1 us): lxml parsers are not
    # thread-safe.
    parser = etree.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True, huge_tree=True)
    try:
        root = etree.fromstring(data, parser)
    except etree.LxmlError as err:
        raise ReaderError(f"cannot parse the HTML: {err}") from err
    # libxml2 stops reading at a resource limit (elements nested 2048 deep, even with huge_tree)
    # and returns what it had: the rest of the page would be lost without a word
    for entry in parser.error_log:
        if entry.type_name == "ERR_RESOURCE_LIMIT":
            raise CutShort(
                f"the HTML parser stopped at line {entry.line} ({entry.message.split(',')[0].strip()}), so "
                "the rest of the page cannot be read; tags left open nest every element after them "
                "deeper: close them, or save the page's text as .txt"
            )
    return root


def _drop_furniture(root: etree._Element) -> None:
    """Remove scripts, styles, navigation and elements whose id / class names page furniture."""
    etree.strip_elements(root, *_DROPPED_TAGS, with_tail=False)
    # Document order visits a parent before its children, so a dropped parent's children are
    # already detached from the page when their turn comes: dropping them again changes nothing.
    for tag in root.xpath("//*[@class or @id]"):
        if tag.tag in _PROTECTED:
            continue
        if _BOILERPLATE.search(f"{tag.get('class', '')} {tag.get('id', '')}"):
            _remove(tag)


def _remove(tag: etree._Element) -> None:
    """Detach ``tag`` and its content; its tail (the text after it) stays where it was."""
    parent = tag.getparent()
    if parent is None:
        return
    if tag.tail:
        previous = tag.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + tag.tail
        else:
            parent.text = (parent.text or "") + tag.tail
    parent.remove(tag)


def _mark_breaks(root: etree._Element) -> None:
    """Replace each ``<br>`` by :data:`_BREAK` in the surrounding text."""
    breaks = list(root.iter("br"))
    for line_break in breaks:
        line_break.tail = _BREAK + (line_break.tail or "")
    if breaks:
        etree.strip_elements(root, "br", with_tail=False)


def _main_roots(root: etree._Element) -> list[etree._Element]:
    """``<main>`` if present, else every top-level ``<article>``, else the body (or the whole page)."""
    main = next(root.iter("main"), None)
    if main is not None:
        return [main]
    articles = [tag for tag in root.iter("article") if next(tag.iterancestors("article"), None) is None]
    if articles:
        return articles
    body = next(root.iter("body"), None)
    return [body] if body is not None else [root]


# A walker renders one element; it yields the walkers of the child elements it descends into,
# each run to its end before it goes on (:func:`_run`).
Walk = Iterator["Walk"]


def _run(walk: Walk) -> None:
    """Run ``walk`` and every walker it yields, depth first, on a list instead of Python's call
    stack: libxml2 nests what a page never closes, and old pages leave thousands of ``<div>`` or
    ``<font>`` open, past the ~500 levels a recursive walk reached before RecursionError."""
    stack = [walk]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
        else:
            stack.append(child)


def _collect(container: etree._Element, blocks: list[str], depth: int) -> Walk:
    """Append the Markdown-ish blocks of ``container``'s children; inline runs become paragraphs."""
    inline: list[str] = [container.text or ""]
    for child in container:
        if child.tag not in _BLOCKS:
            inline.append(_text(child))
        else:
            _flush(inline, blocks)
            yield _block(child, blocks, depth)
        inline.append(child.tail or "")
    _flush(inline, blocks)


def _block(tag: etree._Element, blocks: list[str], depth: int) -> Walk:
    """Render one block-level element (heading, list item, table, paragraph or container)."""
    name = tag.tag
    if name in _HEADINGS:
        text = _squash(_text(tag))
        blocks.append(f"{'#' * _HEADINGS[name]} {text}" if text else "")
    elif name == "li":
        yield _list_item(tag, blocks, depth)
    elif name == "table":
        blocks.append(_table(tag))
    elif name == "pre":
        blocks.append(_text(tag).replace(_BREAK, "\n").strip("\n"))
    elif name in _LEAF_BLOCKS:
        blocks.append(_lines(_text(tag)))
    elif name in ("ul", "ol"):
        items: list[str] = []
        yield _collect(tag, items, depth)
        blocks.append("\n".join(item for item in items if item))
    elif name in _CONTAINERS:
        yield _collect(tag, blocks, depth)


def _list_item(item: etree._Element, blocks: list[str], depth: int) -> Walk:
    """'- text' for a list item, indented by nesting depth, followed by its nested lists."""
    nested: list[etree._Element] = []
    parts = [item.text or ""]
    for child in item:
        if child.tag in ("ul", "ol"):
            nested.append(child)  # rendered after the item's own text, one level deeper
        else:
            parts.append(_text(child))
        parts.append(child.tail or "")
    text = _squash("".join(parts))
    if text:
        blocks.append(f"{'  ' * depth}- {text}")
    for sublist in nested:
        yield _collect(sublist, blocks, depth + 1)


def _table(table: etree._Element) -> str:
    """One line per row, cells joined with ' | '; rows of nested tables are not repeated."""
    lines: list[str] = []
    for row in table.iter("tr"):
        if next(row.iterancestors("table"), None) is not table:
            continue
        cells = [_squash(_text(cell)) for cell in row if cell.tag in ("td", "th")]
        if any(cells):
            lines.append(" | ".join(cells))
    return "\n".join(lines)


def _text(tag: etree._Element) -> str:
    """All text inside ``tag`` (not its tail)."""
    return "".join(tag.itertext())  # the parser dropped comments, so this is only page text


def _flush(inline: list[str], blocks: list[str]) -> None:
    """Turn the pending inline text into one paragraph block."""
    text = _lines("".join(inline))
    if text:
        blocks.append(text)
    inline.clear()


def _lines(text: str) -> str:
    """Whitespace collapsed within each line; lines are where the page had a <br>."""
    return "\n".join(_squash(line) for line in text.split(_BREAK)).strip()


def _squash(text: str) -> str:
    """Collapse HTML whitespace (source newlines, runs of spaces, <br>) to single spaces."""
    return " ".join(text.replace(_BREAK, " ").split())
