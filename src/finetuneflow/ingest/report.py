"""What an ingest did to every input, for a person (one line per input, nothing cut) and for a
program (``ingest-report.json`` in the project folder, rewritten by each ingest)."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPORT_FILE = "ingest-report.json"
FORMAT = 1  # version of the JSON report's layout


@dataclass
class FileReport:
    """What happened to one file: ingested | unchanged | partial | failed | skipped."""

    path: str
    status: str
    chunks: int = 0
    problems: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    domain: str | None = None
    notes: list[str] = field(default_factory=list)  # what the reader did that lost nothing (OCR)


@dataclass
class IngestReport:
    files: list[FileReport]
    pii: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> list[FileReport]:
        return [f for f in self.files if f.status == "failed"]

    def counts(self) -> dict[str, int]:
        return dict(Counter(f.status for f in self.files))

    def dropped(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for f in self.files:
            total.update(f.dropped)
        return dict(total)


def report_data(report: IngestReport, inputs: list[str], settings: dict[str, Any]) -> dict[str, Any]:
    """The JSON form of ``report``: totals, then every input's status, chunks, drops, problems, notes."""
    return {
        "format": FORMAT,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": inputs,
        "settings": settings,
        "counts": report.counts(),
        "dropped": report.dropped(),
        "pii": report.pii,
        "files": [asdict(f) for f in report.files],
    }


def write_report(folder: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as the folder's ingest report (atomically); returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / REPORT_FILE
    tmp = path.with_name(f".{REPORT_FILE}.{os.getpid()}.tmp")
    # errors="replace": a problem line may quote a lone surrogate from a file (a role, a key)
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8", errors="replace")
    os.replace(tmp, path)
    return path


def read_report(folder: Path) -> dict[str, Any]:
    """The last ingest report written in ``folder``.

    Raises:
        LookupError: no ingest has written one there yet.
    """
    path = folder / REPORT_FILE
    if not path.is_file():
        raise LookupError(f"no ingest report in {folder}; run `ftf ingest` for this project first")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def file_lines(files: list[dict[str, Any]]) -> list[str]:
    """One plain line per input: status, chunks, the whole path, then every problem, drop and note
    (nothing is shortened, so a log or ``grep`` sees all of it)."""
    out = []
    for f in files:
        said = [*f["problems"], *(f"{n} {why}" for why, n in f["dropped"].items()), *f["notes"]]
        line = f"{f['status']:<9} {f['chunks']:>6}  {f['path']}"
        out.append(line + (f"  -- {'; '.join(said)}" if said else ""))
    return out
