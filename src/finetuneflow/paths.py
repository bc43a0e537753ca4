"""Where FineTuneFlow keeps its state: one folder, movable with ``FTF_HOME``.

Layout::

    $FTF_HOME/                      (default ~/.finetuneflow)
      ftf.db                        SQLite database (projects, files, chunks, examples, runs, jobs)
      models/<name>/                base models converted once (e.g. GGUF -> safetensors)
      projects/<project>/
        raw/                        copies of ingested files, named by content hash
        datasets/<name>/            built datasets (JSONL + manifest + stats)
        runs/<run-id>/              training runs (config, manifest, metrics.jsonl, adapter/)
        exports/<run-id>/           exported artefacts and the report
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # also run ids a caller chooses


def home() -> Path:
    """The state folder (created on first use)."""
    root = Path(os.environ.get("FTF_HOME") or Path.home() / ".finetuneflow").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def models_dir() -> Path:
    """Cache of converted base models."""
    path = home() / "models"
    path.mkdir(exist_ok=True)
    return path


def check_project_name(name: str) -> str:
    """Return ``name`` if it is a safe folder name.

    Raises:
        ValueError: names with path separators, leading dots or odd characters.
    """
    if not PROJECT_NAME.match(name):
        raise ValueError(
            f"invalid project name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return name


def project_path(name: str) -> Path:
    """Where project ``name``'s folder is (nothing created)."""
    return home() / "projects" / check_project_name(name)


def project_dir(name: str) -> Path:
    """The folder of project ``name`` with its standard sub-folders."""
    root = project_path(name)
    for sub in ("raw", "datasets", "runs", "exports"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def project_settings(name: str, **update: Any) -> dict[str, Any]:
    """The project's ``project.json`` (settings later steps reuse, such as the tokenizer chunks were
    counted with), after merging ``update`` into it."""
    path = project_dir(name) / "project.json"
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if update:
        data.update(update)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(path)
    return data


def sha256_file(path: Path) -> str:
    """sha256 hex of a file, read in 1 MiB blocks (model files are large)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
