"""Does the tuned model answer better, the same or worse than the base? The rule, and its sentence.

The rule (a paired comparison, so a question's difficulty cancels out):

1. For every question, ``d = score(tuned answer) - score(base answer)`` (token F1 by default).
2. A percentile bootstrap over questions: ``resamples`` times, draw n questions with replacement
   (seeded: the same inputs always give the same verdict) and take the mean of their ``d``. The
   central ``confidence`` share of those means is the confidence interval of the mean difference.
3. **better** when the whole interval is above 0, **worse** when it is wholly below 0, otherwise
   **the same**: the difference is within what the choice of questions alone could produce.
   With fewer than :data:`MIN_QUESTIONS` questions no difference is told apart from noise: the
   verdict is "the same", and the sentence says why.

The sentence reports the means, the difference and its interval, never a loss alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

Verdict = Literal["better", "same", "worse"]
MIN_QUESTIONS = 5
SIDES = {"base": "base", "tuned": "tuned", "base_memory": "base+memory", "tuned_memory": "tuned+memory"}
"""Who answers (a row's key) -> its column label, in table order; the memory sides only with a memory."""
MEMORY_PEERS = {"base_memory": "base", "tuned_memory": "tuned"}  # memory side -> side it is compared with
METRIC_NAMES = {"f1": "token F1", "rouge_l": "ROUGE-L", "em": "exact match", "contains": "answer found"}


@dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`compare`: means over ``n`` questions, their difference and its interval."""

    verdict: Verdict
    n: int
    base: float
    tuned: float
    diff: float  # mean of (tuned - base) over the questions
    low: float  # confidence interval of ``diff``
    high: float
    metric: str
    confidence: float
    resamples: int
    seed: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap_interval(
    diffs: Sequence[float], resamples: int, seed: int, confidence: float
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs`` (seeded, so reproducible).

    Raises:
        ValueError: no differences, ``resamples`` < 1 or ``confidence`` outside (0, 1).
    """
    import numpy as np

    if not diffs or resamples < 1 or not 0 < confidence < 1:
        raise ValueError("need at least one difference, resamples >= 1 and 0 < confidence < 1")
    values = np.asarray(diffs, dtype=np.float64)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(resamples, len(values)))  # (resamples, n) indices
    means = values[picks].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def compare(
    base: Sequence[float],
    tuned: Sequence[float],
    *,
    metric: str = "f1",
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Comparison:
    """Paired comparison of per-question scores (``base[i]`` and ``tuned[i]`` score question i).

    Raises:
        ValueError: the two lists differ in length or are empty.
    """
    if len(base) != len(tuned) or not base:
        raise ValueError(f"need paired scores for the same questions, got {len(base)} and {len(tuned)}")
    diffs = [t - b for b, t in zip(base, tuned, strict=True)]
    low, high = bootstrap_interval(diffs, resamples, seed, confidence)
    verdict: Verdict = "same"
    if len(diffs) >= MIN_QUESTIONS and low > 0:
        verdict = "better"
    elif len(diffs) >= MIN_QUESTIONS and high < 0:
        verdict = "worse"
    n = len(diffs)
    return Comparison(
        verdict, n, sum(base) / n, sum(tuned) / n, sum(diffs) / n, low, high, metric, confidence,
        resamples, seed,
    )  # fmt: skip


def sentence(
    comparison: Comparison | Mapping[str, Any],
    questions: str,
    subject: str = "the tuned model",
    peer: str = "the base model",
) -> str:
    """One plain sentence for a comparison; ``questions`` names them ("questions it was not trained on"),
    ``subject`` the side whose scores are ``tuned`` and ``peer`` the one whose are ``base``."""
    c = comparison if isinstance(comparison, Comparison) else Comparison(**comparison)
    name = METRIC_NAMES.get(c.metric, c.metric)
    numbers = (
        f"{name} {c.base:.2f} → {c.tuned:.2f} ({c.diff:+.2f}, {100 * c.confidence:.0f}% CI "
        f"{c.low:+.2f} to {c.high:+.2f})"
    )
    head = f"On {c.n} {questions}, {subject} answers"
    if c.verdict == "better":
        return f"{head} **better** than {peer}: {numbers}."
    if c.verdict == "worse":
        return f"{head} **worse** than {peer}: {numbers}."
    if c.n < MIN_QUESTIONS:
        return (
            f"{head} **the same** as {peer} as far as {c.n} question(s) can tell (at least "
            f"{MIN_QUESTIONS} are needed to tell a difference from noise): {numbers}."
        )
    return f"{head} **the same** as {peer} (the difference is within noise): {numbers}."
