"""The files that make a run folder describe itself."""

from __future__ import annotations

import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

CONFIG = "config.json"
MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
ADAPTER = "adapter"
FULL_MODEL = "model"  # full fine-tuning saves every weight here instead of an adapter


def library_versions() -> dict[str, str]:
    """Versions of the libraries that decide a run's numbers."""
    out = {"python": platform.python_version()}
    for pkg in ("finetuneflow", "torch", "transformers", "peft", "safetensors"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically so a killed process never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    tmp.replace(path)


def read_json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


class MetricsLog:
    """Append-only metrics.jsonl, flushed per line so a reader (or a crash) sees every step."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start = time.time()

    def write(self, **record: Any) -> None:
        record.setdefault("time_s", round(time.time() - self.start, 3))
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop metrics logged after optimizer step ``step`` (a resumed run replays those steps)."""
    kept = [m for m in read_metrics(run_dir) if m.get("step", 0) <= step]
    tmp = run_dir / (METRICS + ".tmp")
    tmp.write_text("".join(json.dumps(m) + "\n" for m in kept))
    tmp.replace(run_dir / METRICS)
