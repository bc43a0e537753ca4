"""Domain-tagged JSON collections: ``<space>/<db>/<collection>/*.json``.

A collection folder declares itself with a ``_collection.json`` file, e.g.
``{"domain": "safety", "tags": ["regulated"]}``. Every chunk and example from its documents carries
that domain, and ``ftf ingest --domain safety`` ingests only the collections of that domain.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finetuneflow.errors import ReaderError

COLLECTION_FILE = "_collection.json"


def collection_info(file: Path, root: Path) -> dict[str, Any] | None:
    """The declaration of the nearest collection folder above ``file`` (up to ``root``), or None.

    Raises:
        ReaderError: the ``_collection.json`` found is not a JSON object with a string ``domain``.
    """
    folder = file.parent
    root = root.resolve()
    while True:
        decl = folder / COLLECTION_FILE
        if decl.is_file():
            return _load(decl)
        if folder.resolve() == root or folder.parent == folder:
            return None
        folder = folder.parent


def _load(decl: Path) -> dict[str, Any]:
    try:
        data = json.loads(decl.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReaderError(f"{decl}: unreadable collection declaration ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("domain"), str) or not data["domain"].strip():
        raise ReaderError(
            f'{decl}: must be a JSON object with a "domain" string, e.g. {{"domain": "safety"}}'
        )
    folder = decl.parent
    tags = data.get("tags") or []
    return {
        "domain": data["domain"].strip(),
        "tags": [str(t) for t in tags] if isinstance(tags, list) else [str(tags)],
        "collection": folder.name,
        "db": folder.parent.name,
        "space": folder.parent.parent.name,
    }
