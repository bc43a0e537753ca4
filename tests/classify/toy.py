"""A learnable toy task for the classification tests: labelled CSVs and a config for the tiny model."""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path
from typing import Any

from tiny import CORPUS  # tests/ is on sys.path (tests/conftest.py)

from finetuneflow.classify.config import ClassifyConfig
from finetuneflow.models.lora import LoraSettings

KEYWORDS = {"hardware": "printer", "contract": "warranty"}
# filler words from the tiny tokenizer's corpus, without the two words that decide the class
WORDS = sorted(
    {w.lower() for line in CORPUS[:3] for w in re.findall(r"[A-Za-z]+", line)} - {"printer", "warranty"}
)


def write_csv(path: Path, rows: list[list[str]], delimiter: str = ",", encoding: str = "utf-8") -> Path:
    with path.open("w", newline="", encoding=encoding) as fh:
        csv.writer(fh, delimiter=delimiter).writerows(rows)
    return path


def toy_rows(n: int, seed: int = 0) -> list[list[str]]:
    """Texts whose class is one keyword somewhere in the middle: the last token says nothing, so the
    model must carry the keyword forward through attention to the token it classifies from."""
    rng = random.Random(seed)
    rows = [["text", "label"]]
    for i in range(n):
        label = ("hardware", "contract")[i % 2]
        words = rng.sample(WORDS, 6)
        words.insert(rng.randrange(1, 6), KEYWORDS[label])
        rows.append([" ".join(words), label])
    return rows


def toy_config(tiny_model: Path, **over: Any) -> ClassifyConfig:
    base: dict[str, Any] = dict(
        base_model=str(tiny_model),
        max_steps=40,
        epochs=0,
        learning_rate=5e-3,
        batch_size=8,
        lora=LoraSettings(r=8, alpha=16),
        eval_fraction=0.25,
        threads=1,
        max_len=32,
    )
    return ClassifyConfig(**{**base, **over})
