"""The on-disk layout of a built dataset (read by training, evaluation and external tools).

::

    datasets/<name>/
      chat/train.jsonl  chat/eval.jsonl     {"id", "source", "messages": [{"role", "content"}, ...]}
      text/train.jsonl  text/eval.jsonl     {"id", "source", "text"}
      preference/train.jsonl                 {"prompt", "chosen", "rejected"}: chat corrections (from-chats)
      manifest.json                          counts, hashes, settings, provenance
      stats.json                             token/length statistics

Each JSONL loads unchanged with ``datasets.load_dataset("json", data_files=...)`` and TRL.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from finetuneflow import paths

KINDS = ("chat", "text")
SPLITS = ("train", "eval")


def split_path(dataset_dir: Path, kind: str, split: str) -> Path:
    """Path of one JSONL file of a dataset."""
    return dataset_dir / kind / f"{split}.jsonl"


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows atomically (temp file + rename); returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All rows of a JSONL file ([] when it does not exist)."""
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def read_split(dataset_dir: Path, split: str, kinds: tuple[str, ...] = KINDS) -> list[dict[str, Any]]:
    """Rows of ``split`` across the given kinds, chat first."""
    rows: list[dict[str, Any]] = []
    for kind in kinds:
        rows += read_jsonl(split_path(dataset_dir, kind, split))
    return rows


def dataset_hashes(dataset_dir: Path) -> dict[str, str]:
    """Relative path -> sha256 for every JSONL file of the dataset."""
    return {
        str(p.relative_to(dataset_dir)): paths.sha256_file(p) for p in sorted(dataset_dir.glob("*/*.jsonl"))
    }
