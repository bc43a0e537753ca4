"""Reading the parts of a zip package (PPTX, XLSX, EPUB) safely: the shared plumbing of their readers.

A :class:`Package` is opened only after :func:`~finetuneflow.ingest.sniff.check_zip_bomb` has
read the central directory; Python's zipfile never inflates a member past the size it declares,
so a lying header cannot grow one either. XML parts are parsed by lxml with entity resolution and
network access off (no billion laughs, no XXE) and without ``huge_tree`` (libxml2's limits on
depth and text size stay on). Every failure becomes a :class:`ReaderError` that names the part and
says how to repair the file.
"""

from __future__ import annotations

import posixpath
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from lxml import etree

from finetuneflow.errors import ReaderError
from finetuneflow.ingest.sniff import check_zip_bomb

# Untrusted XML: no DTD entities (billion laughs, XXE), no network, no multi-GB trees.
_SAFE = {"resolve_entities": False, "no_network": True, "huge_tree": False, "remove_comments": True}
_PARSER = etree.XMLParser(**_SAFE)
_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"
# What a damaged zip or member raises while being read.
DAMAGED = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, KeyError, etree.XMLSyntaxError)


class Package:
    """An open zip package; ``fix`` ends every error message ("open it in X and save it again")."""

    def __init__(self, archive: zipfile.ZipFile, fix: str) -> None:
        self.archive = archive
        self.fix = fix
        self.names = set(archive.namelist())

    def read(self, name: str) -> bytes:
        """The bytes of part ``name``.

        Raises:
            ReaderError: the part is missing or damaged.
        """
        try:
            return self.archive.read(name)
        except DAMAGED as exc:
            raise self.damaged(name, exc) from exc

    def xml(self, name: str) -> Any:
        """Part ``name`` parsed as XML (the root element).

        Raises:
            ReaderError: the part is missing, damaged or not well-formed XML.
        """
        data = self.read(name)
        try:
            return etree.fromstring(data, _PARSER)
        except etree.XMLSyntaxError as exc:
            raise self.damaged(name, exc) from exc

    def elements(self, name: str, tag: str) -> Iterator[Any]:
        """Each ``tag`` element of part ``name`` as it is parsed, cleared once the caller moves on,
        so a sheet of a million rows is held one row at a time.

        Raises:
            ReaderError: the part is missing, damaged or not well-formed XML.
        """
        try:
            with self.archive.open(name) as stream:
                for _, element in etree.iterparse(stream, events=("end",), tag=tag, **_SAFE):
                    yield element
                    element.clear(keep_tail=False)
                    while element.getprevious() is not None:  # cleared siblings still hold memory
                        del element.getparent()[0]
        except DAMAGED as exc:
            raise self.damaged(name, exc) from exc

    def relationships(self, part: str) -> dict[str, tuple[str, str]]:
        """Relationship id -> (type's last path segment, target part name) of ``part``; external
        targets (links to web pages) are left out. A part without relationships gives ``{}``."""
        folder, base = posixpath.split(part)
        rels_name = posixpath.join(folder, "_rels", f"{base}.rels")
        if rels_name not in self.names:
            return {}
        out: dict[str, tuple[str, str]] = {}
        for rel in self.xml(rels_name).iter(f"{_REL}Relationship"):
            target, rel_id = rel.get("Target"), rel.get("Id")
            if not target or not rel_id or rel.get("TargetMode") == "External":
                continue
            out[rel_id] = (rel.get("Type", "").rsplit("/", 1)[-1], resolve(folder, target))
        return out

    def damaged(self, name: str, exc: BaseException) -> ReaderError:
        """The error for a part that is missing or cannot be read."""
        what = "is missing" if isinstance(exc, KeyError) else f"is damaged ({exc})"
        return ReaderError(f"part {name} {what}; {self.fix}")


def resolve(folder: str, target: str) -> str:
    """The zip member name of a relative (or package-absolute ``/...``) reference from ``folder``."""
    target = unquote(target.split("#", 1)[0])
    joined = target.lstrip("/") if target.startswith("/") else posixpath.join(folder, target)
    return posixpath.normpath(joined).lstrip("/")


@contextmanager
def open_package(path: Path, fix: str) -> Iterator[Package]:
    """``path`` as a :class:`Package`, after the zip-bomb check.

    Raises:
        ReaderError: a zip bomb, or a damaged or truncated zip.
    """
    check_zip_bomb(path)
    try:
        archive = zipfile.ZipFile(path)
    except DAMAGED as exc:
        raise ReaderError(f"damaged zip package ({exc}); {fix}") from exc
    with archive:
        yield Package(archive, fix)


def local_name(element: Any) -> str:
    """The tag of ``element`` without its namespace ('' for comments and entity references)."""
    tag = element.tag
    return etree.QName(tag).localname if isinstance(tag, str) else ""
