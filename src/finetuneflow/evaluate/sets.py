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

Each set is a seeded sample of its file's chat rows, kept in file order. The question of a row is
everything before its last assistant turn; the reference is that turn.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from finetuneflow.evaluate.config import EvalConfig
from finetuneflow.records import Message
from finetuneflow.state.datasets import read_split

SETS = {
    "eval": "eval split",
    "heldout": "held-out questions (closed book)",
    "recall": "recall probe (training questions)",
    "general": "general questions (forgetting check)",
}
"""Set name -> the label tables show, in the order they are shown."""
UNSEEN = ("eval", "heldout")  # questions the model was not trained on: the verdict is about these


@dataclass(frozen=True)
class Question:
    """One question: the conversation up to the answer, the reference answer and any other
    acceptable wordings of it (each score takes the best over ``reference`` and ``also``)."""

    id: str
    prompt: list[Message]
    reference: str
    source: str = ""
    also: tuple[str, ...] = field(default=())

    @property
    def text(self) -> str:
        """The question as asked: the last message before the answer."""
        return self.prompt[-1]["content"] if self.prompt else ""

    @property
    def references(self) -> tuple[str, ...]:
        return (self.reference, *self.also)


def question_of(record: dict[str, Any]) -> Question | None:
    """The question a chat row asks (None for a row without an assistant turn after a prompt)."""
    messages = record.get("messages") or []
    answers = [k for k, m in enumerate(messages) if m.get("role") == "assistant"]
    if not answers or answers[-1] == 0:
        return None
    last = answers[-1]
    return Question(
        str(record.get("id", "")), list(messages[:last]), messages[last]["content"], record.get("source", "")
    )


def sample(records: list[dict[str, Any]], n: int, seed: int, name: str) -> list[Question]:
    """``n`` questions of ``records`` drawn with ``seed`` (all when fewer), in file order."""
    questions = [q for q in map(question_of, records) if q is not None]
    if len(questions) <= n:
        return questions
    keep = set(random.Random(f"{seed}:{name}").sample(range(len(questions)), n))
    return [q for i, q in enumerate(questions) if i in keep]


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
