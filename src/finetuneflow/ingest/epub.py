"""EPUB e-books: one ``text`` record per chapter, in the reading order of the spine.

The package document (``META-INF/container.xml`` names it) lists the book's files (manifest) and
their reading order (spine). Each XHTML chapter becomes Markdown-ish text through the HTML reader
(:func:`~finetuneflow.ingest.html.html_record` as a book page: headings, lists, tables, headers
and footnotes kept, scripts and navigation dropped); a chapter without text (a cover picture)
gives nothing. ``meta["chapter"]`` is the chapter's title, from the table of contents (EPUB 3
``nav`` or EPUB 2 NCX), else its first heading, else its ``<title>``; ``meta["chapter_index"]`` is
its 1-based place in the spine.

A chapter listed in ``META-INF/encryption.xml`` is DRM-encrypted and cannot be read; a book whose
every chapter is encrypted is refused with that reason. (Font obfuscation, also listed there, does
not touch text.) All XML is parsed as in :mod:`finetuneflow.ingest.ooxml`; chapters go through
libxml2's HTML parser, which never expands DTD entities either.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lxml import etree

from finetuneflow.errors import ReaderError
from finetuneflow.ingest.html import CutShort, html_record
from finetuneflow.ingest.ooxml import Package, open_package, resolve
from finetuneflow.records import SourceRecord
from finetuneflow.text.clean import decode_bytes

_CONTAINER = "META-INF/container.xml"
_ENCRYPTION = "META-INF/encryption.xml"
_OPF = "{http://www.idpf.org/2007/opf}"
_NCX = "{http://www.daisy.org/z3986/2005/ncx/}"
_ENC = "{http://www.w3.org/2001/04/xmlenc#}"
_CHAPTER_TYPES = frozenset({"application/xhtml+xml", "text/html", "application/x-dtbook+xml"})
FIX = "re-export it from the application that made it (Calibre, Sigil) or convert it to EPUB again"


def epub_records(path: Path) -> Iterator[SourceRecord | str]:
    """One record per chapter with text, in spine order, or a problem line for a chapter that
    cannot be read (``"chapter 3 (text/ch3.xhtml): DRM-encrypted"``).

    Raises:
        ReaderError: a zip bomb, a damaged zip, no readable package document, or a book whose every
            chapter is DRM-encrypted.
    """
    with open_package(path, FIX) as package:
        opf_part = _package_document(package)
        opf = package.xml(opf_part)
        manifest = _manifest(opf, posixpath.dirname(opf_part))
        chapters = _spine(opf, manifest)
        encrypted = _encrypted(package)
        if chapters and all(part in encrypted for part in chapters):
            raise ReaderError(
                "the e-book is DRM-protected (its chapters are encrypted); only a DRM-free copy can be "
                "read: export one from the shop or the application it came from"
            )
        titles = _toc_titles(package, opf, manifest)
        for index, part in enumerate(chapters, start=1):
            if part in encrypted:
                yield f"chapter {index} ({part}): DRM-encrypted, not read"
                continue
            try:
                record = _chapter(package, part, index, titles.get(part, ""))
            except ReaderError as exc:
                yield f"chapter {index} ({part}): {exc}"
                continue
            if record is not None:
                yield record


def _package_document(package: Package) -> str:
    """The zip member name of the OPF package document that ``container.xml`` points at."""
    container = package.xml(_CONTAINER)
    for rootfile in container.iter("{*}rootfile"):
        full_path = rootfile.get("full-path")
        if full_path and rootfile.get("media-type", "application/oebps-package+xml").endswith("+xml"):
            return resolve("", full_path)
    raise ReaderError(f"{_CONTAINER} names no package document; {FIX}")


def _manifest(opf: Any, folder: str) -> dict[str, tuple[str, str, str]]:
    """Manifest id -> (zip member name, media type, properties)."""
    items = {}
    for item in opf.iterfind(f"{_OPF}manifest/{_OPF}item"):
        item_id, href = item.get("id"), item.get("href")
        if item_id and href:
            items[item_id] = (resolve(folder, href), item.get("media-type", ""), item.get("properties", ""))
    return items


def _spine(opf: Any, manifest: dict[str, tuple[str, str, str]]) -> list[str]:
    """Member names of the spine's (X)HTML documents in reading order, each once."""
    parts: dict[str, None] = {}  # ordered and each once, without a list scan per itemref
    for itemref in opf.iterfind(f"{_OPF}spine/{_OPF}itemref"):
        part, media_type, _ = manifest.get(itemref.get("idref", ""), ("", "", ""))
        if part and media_type in _CHAPTER_TYPES:
            parts.setdefault(part)
    return list(parts)


def _encrypted(package: Package) -> set[str]:
    """Member names listed as encrypted in ``META-INF/encryption.xml`` (URIs are package-relative)."""
    if _ENCRYPTION not in package.names:
        return set()
    return {
        resolve("", reference.get("URI", ""))
        for reference in package.xml(_ENCRYPTION).iter(f"{_ENC}CipherReference")
        if reference.get("URI")
    }


def _toc_titles(package: Package, opf: Any, manifest: dict[str, tuple[str, str, str]]) -> dict[str, str]:
    """Chapter member name -> its first title in the table of contents (EPUB 3 nav, else EPUB 2 NCX).

    A damaged table of contents is not worth failing the book for: chapters then use their headings.
    """
    nav = next((part for part, _, props in manifest.values() if "nav" in props.split()), None)
    spine = opf.find(f"{_OPF}spine")
    ncx_id = spine.get("toc") if spine is not None else None
    ncx = manifest.get(ncx_id or "", ("", "", ""))[0] or next(
        (part for part, media_type, _ in manifest.values() if media_type == "application/x-dtbncx+xml"), None
    )
    for titles_of, part in ((_nav_titles, nav), (_ncx_titles, ncx)):
        if not part:
            continue
        try:
            titles = titles_of(package, part)
        except ReaderError:
            continue
        if titles:
            return titles
    return {}


def _nav_titles(package: Package, part: str) -> dict[str, str]:
    """Titles from an EPUB 3 navigation document's ``<nav epub:type="toc">`` links."""
    text, _ = decode_bytes(package.read(part))
    root = etree.fromstring(text.encode("utf-8"), etree.HTMLParser(encoding="utf-8", remove_comments=True))
    if root is None:
        return {}
    navs = [nav for nav in root.iter("nav") if "toc" in (nav.get("epub:type") or nav.get("type") or "")]
    titles: dict[str, str] = {}
    folder = posixpath.dirname(part)
    for nav in navs[:1] or list(root.iter("nav"))[:1]:
        for link in nav.iter("a"):
            title = " ".join("".join(link.itertext()).split())
            if link.get("href") and title:
                titles.setdefault(resolve(folder, link.get("href", "")), title)
    return titles


def _ncx_titles(package: Package, part: str) -> dict[str, str]:
    """Titles from an EPUB 2 NCX ``navMap``: each navPoint's label and content source."""
    titles: dict[str, str] = {}
    folder = posixpath.dirname(part)
    for point in package.xml(part).iter(f"{_NCX}navPoint"):
        label = point.findtext(f"{_NCX}navLabel/{_NCX}text") or ""
        content = point.find(f"{_NCX}content")
        if content is not None and content.get("src") and label.strip():
            titles.setdefault(resolve(folder, content.get("src", "")), " ".join(label.split()))
    return titles


def _chapter(package: Package, part: str, index: int, toc_title: str) -> SourceRecord | None:
    """A chapter's text record, or None for a chapter without text (cover, blank page).

    Raises:
        ReaderError: the chapter is missing, damaged or nested too deeply.
    """
    text, _ = decode_bytes(package.read(part))
    try:
        record = html_record(text, web_page=False)
    except CutShort as exc:  # a hostile chapter nests 100k deep: the parser stops at 2048
        raise ReaderError("its elements are nested too deeply to read") from exc
    except ReaderError:
        return None  # nothing but pictures, or an empty page: no text to learn from
    headings = (line.lstrip("#").strip() for line in record.text.splitlines() if line.startswith("#"))
    heading = next(headings, "")
    title = toc_title or heading or record.meta.get("title", "")
    record.meta = {"chapter": title, "chapter_index": index, "part": part}
    return record
