"""Run folders: their ids, where they live, the files that make them describe themselves, and the
guard that keeps a finished run from being overwritten. Every step that reads or writes a run
(train, classify, evaluate, export, chat) uses this module; none of them owns the format."""

from __future__ import annotations

import json
import platform
import secrets
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from finetuneflow import paths
from finetuneflow.errors import FinishedRunError

CONFIG = "config.json"
MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
ADAPTER = "adapter"
FULL_MODEL = "model"  # full fine-tuning saves every weight here instead of an adapter
EVALUATION = "evaluation.json"  # written by the evaluate step, read by the report
CHECKPOINTS = "checkpoints"
LABELS = "labels.json"  # a classification run's classes: labels, id2label, label2id
PREDICTIONS = "eval_predictions.jsonl"  # a classification run's eval examples, predicted

# What a run trained, as recorded in the runs table: a causal LM (chat/text) or a sequence classifier.
CAUSAL = "causal"
CLASSIFY = "classify"


def new_run_id() -> str:
    """Sortable and unique: 20261121-143005-3fa2."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def check_new_run_id(run_id: str) -> str:
    """A run id a caller chose for a new run: one every client can name (the REST API takes the
    project names' rule). Raises ValueError otherwise."""
    if not paths.PROJECT_NAME.match(run_id):
        raise ValueError(
            f"invalid run id {run_id!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return run_id


def check_run_id(run_id: str) -> str:
    """The id itself when it can name a folder (no path tricks); raises LookupError otherwise."""
    if not run_id or "/" in run_id or "\\" in run_id or run_id.startswith("."):
        raise LookupError(f"invalid run id {run_id!r}")
    return run_id


def run_folder(project_dir: Path, run_id: str) -> Path:
    """Where run ``run_id`` of the project in ``project_dir`` lives (it may not exist yet)."""
    return project_dir / "runs" / check_run_id(run_id)


def check_not_finished(run_dir: Path) -> None:
    """Refuse to write into a run folder that already holds a finished run.

    Raises:
        FinishedRunError: ``summary.json`` exists there.
    """
    if (run_dir / SUMMARY).exists():
        raise FinishedRunError(
            f"{run_dir} already holds a finished run; start a new run instead of overwriting it"
        )


def run_kind(run_dir: Path) -> str:
    """``classify`` when the run folder's config.json holds classification settings, else ``causal``.

    Raises:
        FileNotFoundError: the folder has no config.json (the run never started).
    """
    return CLASSIFY if CLASSIFY in read_json(run_dir / CONFIG) else CAUSAL


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
    """The run's metrics records, oldest first. A line still being written (a reader beside the
    training: the studio's chart, a test) or cut by a kill is skipped, not an error: read whole it
    failed the studio's page and a resume after a kill mid-line."""
    path = run_dir / METRICS
    records = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop metrics logged after optimizer step ``step`` (a resumed run replays those steps)."""
    kept = [m for m in read_metrics(run_dir) if m.get("step", 0) <= step]
    tmp = run_dir / (METRICS + ".tmp")
    tmp.write_text("".join(json.dumps(m) + "\n" for m in kept))
    tmp.replace(run_dir / METRICS)
