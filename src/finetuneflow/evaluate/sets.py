"""The question sets an evaluation asks, built from the run's dataset and the package's own data.

=========  =====================================================================================
set        questions
=========  =====================================================================================
eval       the eval split: documents the model never trained on
heldout    the closed-book held-out questions (train documents' generated questions kept out of
           training, asked without the chunk): did it learn the material?
recall     a sample of its own training questions: what it memorised
general    general-knowledge questions shipped with FineTuneFlow: what it may have forgotten
=========  =====================================================================================

Each set is a seeded sample of its file's chat rows, kept in file order
(:func:`finetuneflow.text.questions.sample`: training's recall probe draws the same way).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from finetuneflow.evaluate.config import EvalConfig
from finetuneflow.state.datasets import read_split
from finetuneflow.text.questions import Question, sample
from finetuneflow.text.verdict import MEMORY_PEERS, SIDES

__all__ = [
    "MEMORY_PEERS",
    "SETS",
    "SIDES",
    "UNSEEN",
    "Question",
    "general_questions",
    "general_text",
    "question_sets",
]

SETS = {
    "eval": "eval split",
    "heldout": "held-out questions (closed book)",
    "recall": "recall probe (training questions)",
    "general": "general questions (forgetting check)",
}
"""Set name -> the label tables show, in the order they are shown."""
UNSEEN = ("eval", "heldout")  # questions the model was not trained on: the verdict is about these


def question_sets(dataset_dir: Path, cfg: EvalConfig) -> dict[str, list[Question]]:
    """Every set the settings ask for, by name (see :data:`SETS`); a set may be empty."""
    sizes = {"eval": cfg.answers, "heldout": cfg.answers, "recall": cfg.recall}
    split = {"eval": "eval", "heldout": "heldout", "recall": "train"}
    out = {
        name: sample(read_split(dataset_dir, split[name], ("chat",)), n, cfg.seed, name) if n else []
        for name, n in sizes.items()
    }
    out["general"] = general_questions() if cfg.forgetting else []
    return out


def _data(name: str) -> str:
    return (resources.files("finetuneflow.evaluate") / "data" / name).read_text(encoding="utf-8")


def general_questions() -> list[Question]:
    """The shipped general-knowledge questions with short reference answers."""
    rows = json.loads(_data("general_questions.json"))
    return [
        Question(
            r["id"], [{"role": "user", "content": r["question"]}], r["answer"], "general", tuple(r["also"])
        )
        for r in rows
    ]


def general_text() -> str:
    """A few paragraphs of plain general-knowledge prose, written for this check."""
    return _data("general_text.md")
