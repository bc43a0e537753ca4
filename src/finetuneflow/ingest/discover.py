"""Which files an ingest reads: the files named, and every file below the folders named, in
sorted path order. Hidden entries, dependency folders and collection declarations are skipped;
what the walk does not enter (a symlinked or unreadable folder, a name that is not UTF-8) comes
with the reason, for the report.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from finetuneflow.ingest.domains import COLLECTION_FILE

SKIP_DIRS = {"node_modules", "__pycache__", "site-packages"}


@dataclass
class Candidate:
    """A discovered file and the ingest root it was found under."""

    file: Path
    name: str
    root: Path
    explicit: bool = False  # named by the user, not found by walking a folder
    skipped: str = ""  # why the walk did not enter it (a symlinked folder, an unreadable one)


def discover(inputs: list[Path]) -> Iterator[Candidate]:
    """Every file under ``inputs``; hidden entries and dependency folders are skipped, and
    collection declarations are read, not ingested."""
    for root in inputs:
        root = root.expanduser()
        if not root.is_dir():
            yield _named(
                Candidate(root, root.name if root.is_file() else str(root), root.parent, explicit=True)
            )
            continue
        for rel, skipped in _files_under(str(root), ""):
            yield _named(Candidate(root / rel, os.path.join(root.name, rel), root, skipped=skipped))


def _named(c: Candidate) -> Candidate:
    """``c``, or where its name is not valid UTF-8 (bytes of another encoding, which Python keeps
    as lone surrogates) skipped under a readable name: no database, report or tokenizer takes it."""
    try:
        c.name.encode("utf-8")
    except UnicodeEncodeError:
        readable = c.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return replace(c, name=readable, skipped=_BAD_NAME)
    return c


_BAD_NAME = "its name is not valid UTF-8 (written in an older encoding such as Latin-1); rename it to read it"


def _files_under(folder: str, rel: str) -> Iterator[tuple[str, str]]:
    """Paths (relative to the walk's root) of the files below ``folder``, in sorted path order.

    Hidden entries, dependency folders and collection declarations are skipped; symlinked folders
    (and links that loop or lead nowhere) are not entered and unreadable folders not listed, each
    given with the reason (the second item; empty for a file to read). One ``scandir``
    per folder (its entries know their type) instead of rglob + sort + a stat per file: ~4x
    faster on 10,000 files, and the main process walks before any worker has work. A stack of
    folders, not recursion: a tree 1,000 folders deep is a legal path on Linux.
    """
    top = _listing(folder)
    if isinstance(top, str):
        yield rel, top
        return
    open_folders: list[tuple[Iterator[os.DirEntry[str]], str]] = [(iter(top), rel)]
    while open_folders:
        entries, here = open_folders[-1]
        entry = next(entries, None)
        if entry is None:
            open_folders.pop()
            continue
        if entry.name.startswith(".") or entry.name in SKIP_DIRS:
            continue
        path = os.path.join(here, entry.name)
        if entry.is_dir(follow_symlinks=False):
            inner = _listing(entry.path)
            if isinstance(inner, str):
                yield path, inner
            else:
                open_folders.append((iter(inner), path))
        elif entry.name != COLLECTION_FILE and _is_file(entry):
            yield path, ""
        elif entry.is_symlink():
            yield path, _LINK_SKIPPED


def _listing(folder: str) -> list[os.DirEntry[str]] | str:
    """The folder's entries by name (per level = sorted whole paths), or why it was not read."""
    try:
        with os.scandir(folder) as found:
            return sorted(found, key=lambda entry: entry.name)
    except OSError as err:
        return f"folder not read: {err.strerror or err}; check its permissions"


def _is_file(entry: os.DirEntry[str]) -> bool:
    """``entry.is_file()``, False for a link that loops (which raises ELOOP there): the walk
    reports it as a link not followed instead of stopping."""
    try:
        return entry.is_file()
    except OSError:
        return False


_LINK_SKIPPED = (
    "symlink to a folder (or a link that loops or leads nowhere); not followed, so that a link "
    "back into the folder cannot repeat it: ingest the folder it points to by name"
)
