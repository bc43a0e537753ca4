"""From per-question rows to what a reader wants first: means per set, and the one verdict.

Pure (no model): the report tests build rows by hand and get the same summary the step writes.
The verdict pools the questions the model was not trained on (eval split and held-out questions);
when there are none it falls back to the recall probe and says so. The rule is
:mod:`finetuneflow.text.verdict`'s: a seeded paired bootstrap of the per-question token-F1
differences; better or worse only when the interval excludes 0. With memory sides in the rows
(base+memory, tuned+memory), the same rule compares each with its model without memory, on the same
questions, in one more sentence each that says plainly when the memory does not help.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from finetuneflow.evaluate.judge import judge_means
from finetuneflow.evaluate.sets import MEMORY_PEERS, SETS, SIDES, UNSEEN
from finetuneflow.text.scores import METRICS, mean_scores
from finetuneflow.text.verdict import compare, sentence

Row = dict[str, Any]
VERDICT_ON = {
    "unseen": "questions it was not trained on",
    "recall": "of its own training questions (no unseen questions to ask)",
}
MEMORY_SUBJECTS = {
    "base_memory": ("the base model with memories in its prompt", "without them"),
    "tuned_memory": ("the tuned model with memories in its prompt", "without them"),
}
NO_HELP = {"same": "The memory does not help here.", "worse": "The memory makes it worse here."}


def sides_of(rows: Sequence[Row]) -> list[str]:
    """The sides the rows hold (base, tuned, and the memory sides when answered), in table order."""
    return [s for s in SIDES if rows and s in rows[0]]


def _compare(rows: Sequence[Row], base: str, other: str, **bootstrap: Any) -> Any:
    return compare([r[base]["f1"] for r in rows], [r[other]["f1"] for r in rows], **bootstrap)


def set_summary(
    name: str, rows: Sequence[Row], *, resamples: int, seed: int, confidence: float
) -> dict[str, Any]:
    """``{"label", "questions", "means": {side: ...}, "comparison", "memory_comparisons", "rows"}``
    of one set (``memory_comparisons`` None without memory sides)."""
    means: dict[str, Any] = {}
    sides = sides_of(rows)
    for side in sides:
        means[side] = mean_scores((r[side] for r in rows), (*METRICS, "nll"))
        grades = [r[side].get("judge") for r in rows]
        if any(g is not None for g in grades):
            means[side]["judge"] = judge_means(grades)
    comparison = (
        compare(
            [r["base"]["f1"] for r in rows], [r["tuned"]["f1"] for r in rows],
            resamples=resamples, seed=seed, confidence=confidence,
        ).to_json()
        if rows
        else None
    )  # fmt: skip
    bootstrap: dict[str, Any] = {"resamples": resamples, "seed": seed, "confidence": confidence}
    memory = {
        side: _compare(rows, peer, side, **bootstrap).to_json()
        for side, peer in MEMORY_PEERS.items()
        if side in sides
    }
    return {"label": SETS.get(name, name), "questions": len(rows), "means": means, "comparison": comparison,
            "memory_comparisons": memory or None, "rows": list(rows)}  # fmt: skip


def overall_verdict(
    sets: Mapping[str, Sequence[Row]], *, resamples: int, seed: int, confidence: float
) -> dict[str, Any] | None:
    """The verdict over the unseen questions (else the recall probe), with its sentence; None when
    there is no question to decide on."""
    pooled, on, names = _pooled(sets)
    if not pooled:
        return None
    c = compare(
        [r["base"]["f1"] for r in pooled], [r["tuned"]["f1"] for r in pooled],
        resamples=resamples, seed=seed, confidence=confidence,
    )  # fmt: skip
    return {**c.to_json(), "sets": names, "sentence": sentence(c, VERDICT_ON[on])}


def _pooled(sets: Mapping[str, Sequence[Row]]) -> tuple[list[Row], str, list[str]]:
    """The rows a verdict decides on: the unseen sets', else the recall probe's."""
    pooled = [r for name in UNSEEN for r in sets.get(name, ())]
    if pooled:
        return pooled, "unseen", [n for n in UNSEEN if sets.get(n)]
    return list(sets.get("recall", ())), "recall", ["recall"]


def memory_verdicts(
    sets: Mapping[str, Sequence[Row]], *, resamples: int, seed: int, confidence: float
) -> dict[str, Any] | None:
    """base+memory vs base and tuned+memory vs tuned on the verdict's questions, each with its
    sentence (saying plainly when the memory does not help); None without memory sides."""
    pooled, on, names = _pooled(sets)
    out = {}
    for side, peer in MEMORY_PEERS.items():
        if side not in sides_of(pooled):
            continue
        c = _compare(pooled, peer, side, resamples=resamples, seed=seed, confidence=confidence)
        text = sentence(c, VERDICT_ON[on], *MEMORY_SUBJECTS[side])
        if c.verdict in NO_HELP:
            text += " " + NO_HELP[c.verdict]
        out[side] = {**c.to_json(), "sets": names, "sentence": text}
    return out or None


def summarise(
    sets: Mapping[str, Sequence[Row]], *, resamples: int = 2000, seed: int = 0, confidence: float = 0.95
) -> dict[str, Any]:
    """``{"verdict", "memory_verdicts", "sets"}``: the overall verdict, the memory's verdicts (None
    without memory sides), and every non-empty set's summary in :data:`SETS` order."""
    order = [n for n in SETS if n in sets] + [n for n in sets if n not in SETS]
    summaries = {
        name: set_summary(name, sets[name], resamples=resamples, seed=seed, confidence=confidence)
        for name in order
        if sets[name]
    }
    bootstrap: dict[str, Any] = {"resamples": resamples, "seed": seed, "confidence": confidence}
    return {
        "verdict": overall_verdict(sets, **bootstrap),
        "memory_verdicts": memory_verdicts(sets, **bootstrap),
        "sets": summaries,
    }


NO_VERDICT = "No questions to answer (no eval split, held-out or training chat rows): nothing to compare."
