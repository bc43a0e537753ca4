"""HTML pages to Markdown-ish main text: the article, not the menus, banners and footers around it."""

from __future__ import annotations

import re

from bs4 import BeautifulSoup, NavigableString, Tag

from finetuneflow.ingest.clean import clean_text
from finetuneflow.records import ReaderError, SourceRecord

# Elements that never hold the page's content.
_DROPPED_TAGS = (
    "script",
    "style",
    "noscript",
    "nav",
    "header",
    "footer",
    "aside",
    "form",
    "svg",
    "template",
    "iframe",
)
# id / class words of page furniture. "nav" and "menu" must start a word ("navbar", "main-menu")
# so that "unavailable" or "canvas" survive; the others are specific enough anywhere.
_BOILERPLATE = re.compile(r"(?:^|[^a-z])(?:nav|menu)|sidebar|footer|cookie|banner", re.IGNORECASE)
# Containers we never drop by class, or the whole page could go ("<body class='has-sidebar'>").
_PROTECTED = frozenset({"html", "body", "main", "article"})
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_CONTAINERS = frozenset(
    {"html", "body", "main", "article", "section", "div", "ul", "ol", "dl", "figure", "center", "details"}
)
_LEAF_BLOCKS = frozenset(
    {"p", "pre", "blockquote", "dt", "dd", "figcaption", "caption", "summary", "address"}
)
_BLOCKS = _CONTAINERS | _LEAF_BLOCKS | frozenset(_HEADINGS) | {"li", "table", "hr"}
# Stands for a <br> inside a run of inline text, whose own newlines are just source layout.
_BREAK = "\x1e"


def html_record(markup: str) -> SourceRecord:
    """One ``text`` record of the page's main text; ``meta["title"]`` holds its ``<title>``.

    Headings become '#' lines, list items '- ' lines, table rows ' | '-joined cells.

    Raises:
        ReaderError: no text is left once scripts, navigation and other page furniture are removed.
    """
    soup = BeautifulSoup(markup.replace(_BREAK, ""), "html.parser")
    title = _squash(soup.title.get_text()) if soup.title else ""
    _drop_furniture(soup)
    for line_break in soup.find_all("br"):
        line_break.replace_with(_BREAK)
    roots = _main_roots(soup)
    blocks: list[str] = []
    for root in roots:
        _collect(root, blocks, depth=0)
    text = clean_text("\n\n".join(block for block in blocks if block))
    if not text:
        raise ReaderError("the page has no readable text once navigation, scripts and styles are removed")
    meta = {"title": title} if title else {}
    return SourceRecord("text", text, meta=meta)


def _drop_furniture(soup: BeautifulSoup) -> None:
    """Remove scripts, styles, navigation and elements whose id / class names page furniture."""
    for tag in soup.find_all(_DROPPED_TAGS):
        tag.decompose()
    for tag in soup.find_all(True):
        if tag.decomposed or tag.name in _PROTECTED:
            continue
        if _BOILERPLATE.search(_id_and_classes(tag)):
            tag.decompose()


def _id_and_classes(tag: Tag) -> str:
    """The element's id and class names as one space-separated string."""
    classes = tag.get("class")
    names: list[str] = [classes] if isinstance(classes, str) else [str(name) for name in classes or []]
    element_id = tag.get("id")
    if isinstance(element_id, str):
        names.append(element_id)
    return " ".join(names)


def _main_roots(soup: BeautifulSoup) -> list[Tag]:
    """``<main>`` if present, else every top-level ``<article>``, else the body (or the whole page)."""
    main = soup.find("main")
    if isinstance(main, Tag):
        return [main]
    articles = [tag for tag in soup.find_all("article") if tag.find_parent("article") is None]
    if articles:
        return articles
    body = soup.find("body")
    return [body] if isinstance(body, Tag) else [soup]


def _collect(container: Tag, blocks: list[str], depth: int) -> None:
    """Append the Markdown-ish blocks of ``container``'s children; inline runs become paragraphs."""
    inline: list[str] = []
    for child in container.children:
        if isinstance(child, NavigableString):
            if type(child) is NavigableString:  # skip comments, doctypes, CDATA
                inline.append(str(child))
            continue
        if not isinstance(child, Tag):
            continue
        if child.name not in _BLOCKS:
            inline.append(child.get_text())
            continue
        _flush(inline, blocks)
        _block(child, blocks, depth)
    _flush(inline, blocks)


def _block(tag: Tag, blocks: list[str], depth: int) -> None:
    """Render one block-level element (heading, list item, table, paragraph or container)."""
    name = tag.name
    if name in _HEADINGS:
        text = _squash(tag.get_text())
        blocks.append(f"{'#' * _HEADINGS[name]} {text}" if text else "")
    elif name == "li":
        _list_item(tag, blocks, depth)
    elif name == "table":
        blocks.append(_table(tag))
    elif name == "pre":
        blocks.append(tag.get_text().replace(_BREAK, "\n").strip("\n"))
    elif name in _LEAF_BLOCKS:
        blocks.append(_lines(tag.get_text()))
    elif name in ("ul", "ol"):
        items: list[str] = []
        _collect(tag, items, depth)
        blocks.append("\n".join(item for item in items if item))
    elif name in _CONTAINERS:
        _collect(tag, blocks, depth)


def _list_item(item: Tag, blocks: list[str], depth: int) -> None:
    """'- text' for a list item, indented by nesting depth, followed by its nested lists."""
    nested = list(item.find_all(["ul", "ol"], recursive=False))
    for sublist in nested:
        sublist.extract()
    text = _squash(item.get_text())
    if text:
        blocks.append(f"{'  ' * depth}- {text}")
    for sublist in nested:
        _collect(sublist, blocks, depth + 1)


def _table(table: Tag) -> str:
    """One line per row, cells joined with ' | '; rows of nested tables are not repeated."""
    lines: list[str] = []
    for row in table.find_all("tr"):
        if row.find_parent("table") is not table:
            continue
        cells = [_squash(cell.get_text()) for cell in row.find_all(["td", "th"], recursive=False)]
        if any(cells):
            lines.append(" | ".join(cells))
    return "\n".join(lines)


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
