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


def excluded(row: Row, side: str) -> dict[str, Any]:
    """A memory side's scores with the question's own source left out of its recall: the answer
    asked again without it, or (when its recall did not hold it) the answer as it is."""
    return (row.get("excluding_source") or {}).get(side) or row[side]


def _excluding(rows: Sequence[Row]) -> bool:
    """Whether the rows were also answered with their own source left out (memory_exclude_source)."""
    return bool(rows) and "excluding_source" in (rows[0].get("memory") or {})


def leakage(rows: Sequence[Row], **bootstrap: Any) -> dict[str, Any] | None:
    """How many questions had their own source recalled and in the prompt, and (when answered that
    way too) the memory sides' means and comparisons with the own source left out; None without a
    memory."""
    if not rows or "memory" not in rows[0]:
        return None
    out: dict[str, Any] = {
        "questions": len(rows),
        "own_source_recalled": sum(bool(r["memory"].get("own_source")) for r in rows),
        "leaked": sum(bool(r["memory"].get("leak")) for r in rows),
        "means_excluding_source": None,
        "comparisons_excluding_source": None,
    }
    if _excluding(rows):
        out["means_excluding_source"] = {
            side: mean_scores((excluded(r, side) for r in rows), (*METRICS, "nll")) for side in MEMORY_PEERS
        }
        out["comparisons_excluding_source"] = {
            side: compare(
                [r[peer]["f1"] for r in rows], [excluded(r, side)["f1"] for r in rows], **bootstrap
            ).to_json()
            for side, peer in MEMORY_PEERS.items()
        }
    return out


def sides_of(rows: Sequence[Row]) -> list[str]:
    """The sides the rows hold (base, tuned, and the memory sides when answered), in table order."""
    return [s for s in SIDES if rows and s in rows[0]]


def _compare(rows: Sequence[Row], base: str, other: str, **bootstrap: Any) -> Any:
    return compare([r[base]["f1"] for r in rows], [r[other]["f1"] for r in rows], **bootstrap)


def set_summary(
    name: str, rows: Sequence[Row], *, resamples: int, seed: int, confidence: float
) -> dict[str, Any]:
    """``{"label", "questions", "means": {side: ...}, "comparison", "memory_comparisons", "leakage",
    "rows"}`` of one set (``memory_comparisons`` and ``leakage`` None without memory sides)."""
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
            "memory_comparisons": memory or None, "leakage": leakage(rows, **bootstrap),
            "rows": list(rows)}  # fmt: skip


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
        out[side] = {**c.to_json(), "sets": names, "sentence": _memory_sentence(c, on, side)}
        if _excluding(pooled):
            clean = compare(
                [r[peer]["f1"] for r in pooled], [excluded(r, side)["f1"] for r in pooled],
                resamples=resamples, seed=seed, confidence=confidence,
            )  # fmt: skip
            leaked = sum(bool(r["memory"].get("leak")) for r in pooled)
            text = (
                f"With each question's own source left out of its memories ({leaked} of {len(pooled)} "
                f"had it in the prompt), o" + _memory_sentence(clean, on, side)[1:]
            )
            out[side]["excluding_source"] = {**clean.to_json(), "leaked": leaked, "sentence": text}
    return out or None


def _memory_sentence(c: Any, on: str, side: str) -> str:
    text = sentence(c, VERDICT_ON[on], *MEMORY_SUBJECTS[side])
    return text + " " + NO_HELP[c.verdict] if c.verdict in NO_HELP else text


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
