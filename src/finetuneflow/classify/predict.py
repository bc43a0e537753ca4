"""Classify texts with a finished run: the base, the run's adapter and head, its labels."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from finetuneflow import hardware
from finetuneflow.classify.config import ClassifyConfig
from finetuneflow.config import from_dict
from finetuneflow.models.classifier import encode, load_run, scores
from finetuneflow.state import runs as rf


def predict(
    run_dir: Path, texts: list[str], device: str = "auto", batch_size: int | None = None
) -> list[tuple[str, float]]:
    """(label, probability) per text from a finished run: base model + the saved adapter and head.

    Batches default to the run's batch size, so a text batched as in evaluation gets the very
    numbers of ``eval_predictions.jsonl`` (other batchings differ only in float rounding).

    Raises:
        FileNotFoundError: ``run_dir`` holds no finished classification run.
    """
    if not (run_dir / rf.SUMMARY).is_file() or not (run_dir / rf.LABELS).is_file():
        raise FileNotFoundError(f"{run_dir} holds no finished classification run (no summary/labels)")
    if not texts:
        return []
    device = hardware.pick_device(device)
    trained = load_run(run_dir, device)
    cfg = from_dict(ClassifyConfig, trained.settings)
    amp = partial(hardware.autocast, device, hardware.autocast_dtype(device, cfg.precision))
    ids, _ = encode(trained.tokenizer, list(texts), cfg.max_len)
    probs = scores(trained.model, ids, trained.pad_id, device, amp, batch_size or cfg.batch_size)
    best = probs.argmax(dim=-1).tolist()
    return [(trained.names[b], float(row[b])) for b, row in zip(best, probs.tolist(), strict=True)]
