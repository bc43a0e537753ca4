"""From per-question rows to what a reader wants first: means per set, and the one verdict.

Pure (no model): the report tests build rows by hand and get the same summary the step writes.
The verdict pools the questions the model was not trained on (eval split and held-out questions);
when there are none it falls back to the recall probe and says so. The rule is
:mod:`finetuneflow.text.verdict`'s: a seeded paired bootstrap of the per-question token-F1
differences; better or worse only when the interval excludes 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from finetuneflow.evaluate.judge import judge_means
from finetuneflow.evaluate.sets import SETS, UNSEEN
from finetuneflow.text.scores import METRICS, mean_scores
from finetuneflow.text.verdict import compare, sentence

Row = dict[str, Any]
VERDICT_ON = {
    "unseen": "questions it was not trained on",
    "recall": "of its own training questions (no unseen questions to ask)",
}


def set_summary(
    name: str, rows: Sequence[Row], *, resamples: int, seed: int, confidence: float
) -> dict[str, Any]:
    """``{"label", "questions", "means": {"base", "tuned"}, "comparison", "rows"}`` of one set."""
    means: dict[str, Any] = {}
    for side in ("base", "tuned"):
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
    return {"label": SETS.get(name, name), "questions": len(rows), "means": means, "comparison": comparison,
            "rows": list(rows)}  # fmt: skip


def overall_verdict(
    sets: Mapping[str, Sequence[Row]], *, resamples: int, seed: int, confidence: float
) -> dict[str, Any] | None:
    """The verdict over the unseen questions (else the recall probe), with its sentence; None when
    there is no question to decide on."""
    pooled = [r for name in UNSEEN for r in sets.get(name, ())]
    on, names = "unseen", [n for n in UNSEEN if sets.get(n)]
    if not pooled:
        pooled, on, names = list(sets.get("recall", ())), "recall", ["recall"]
    if not pooled:
        return None
    c = compare(
        [r["base"]["f1"] for r in pooled], [r["tuned"]["f1"] for r in pooled],
        resamples=resamples, seed=seed, confidence=confidence,
    )  # fmt: skip
    return {**c.to_json(), "sets": names, "sentence": sentence(c, VERDICT_ON[on])}


def summarise(
    sets: Mapping[str, Sequence[Row]], *, resamples: int = 2000, seed: int = 0, confidence: float = 0.95
) -> dict[str, Any]:
    """``{"verdict", "sets"}``: the overall verdict, and every non-empty set's summary in :data:`SETS`
    order."""
    order = [n for n in SETS if n in sets] + [n for n in sets if n not in SETS]
    summaries = {
        name: set_summary(name, sets[name], resamples=resamples, seed=seed, confidence=confidence)
        for name in order
        if sets[name]
    }
    return {
        "verdict": overall_verdict(sets, resamples=resamples, seed=seed, confidence=confidence),
        "sets": summaries,
    }


NO_VERDICT = "No questions to answer (no eval split, held-out or training chat rows): nothing to compare."
