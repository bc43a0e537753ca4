"""Scores of a generated answer against a reference answer, and their means over a question set.

Pure functions of two strings, shared by evaluation, training (early stopping on answer F1) and
the benchmarks, so every number called "token F1" in the project is computed here.

* :func:`exact_match` and :func:`token_f1` follow SQuAD v1.1's evaluation script: both texts are
  normalised by :func:`normalize_answer` (lower case, punctuation and the articles a/an/the removed,
  whitespace collapsed); F1 is the harmonic mean of precision and recall of the shared tokens
  (a multiset: a word counts as often as it occurs in both).
* :func:`rouge_l` is the F-measure of ROUGE-L (longest common subsequence) computed by the
  maintained ``rouge-score`` package, fed tokens cut as that package cuts them (lower case, runs of
  letters and digits), widened to non-ASCII letters, which its own tokenizer drops.
* :func:`contains` says whether the normalised reference occurs inside the normalised answer, word
  for word: a chatty "The capital of France is Paris." still answers "Paris".

Every score is in [0, 1]. Two empty texts agree (1.0); one empty text against another does not (0.0).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

METRICS = ("em", "f1", "rouge_l", "contains")
"""The keys of :func:`score_answer`, in the order tables show them."""

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ROUGE_TOKEN = re.compile(r"[^\W_]+")  # letters and digits, any script


def _is_punctuation(ch: str) -> bool:
    # SQuAD removes string.punctuation (ASCII, symbols like $ and + included); Unicode punctuation too
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's answer normalisation: lower case, punctuation removed, articles removed,
    whitespace collapsed (``"The  Paris!"`` -> ``"paris"``)."""
    text = "".join(ch for ch in text.lower() if not _is_punctuation(ch))
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_tokens(text: str) -> list[str]:
    """The words of :func:`normalize_answer`'s result."""
    return normalize_answer(text).split()


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when both texts are equal after normalisation, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1: harmonic mean of the precision and recall of the normalised words they share."""
    pred, ref = answer_tokens(prediction), answer_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    shared = sum((Counter(pred) & Counter(ref)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(pred), shared / len(ref)
    return 2 * precision * recall / (precision + recall)


class _RougeTokens:
    """The tokenizer handed to rouge-score (it calls ``tokenize``)."""

    def tokenize(self, text: str) -> list[str]:
        return _ROUGE_TOKEN.findall(text.lower())


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer  # the train extra; imported on first use

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_RougeTokens())


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence of words) from the rouge-score package."""
    tokens = _RougeTokens()
    pred, ref = tokens.tokenize(prediction), tokens.tokenize(reference)
    if not pred or not ref:
        return float(pred == ref)
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


def contains(prediction: str, reference: str) -> float:
    """1.0 when the normalised reference occurs in the normalised prediction as whole words."""
    pred, ref = answer_tokens(prediction), answer_tokens(reference)
    if not ref:
        return float(not pred)
    width = len(ref)
    return float(any(pred[i : i + width] == ref for i in range(len(pred) - width + 1)))


def score_answer(prediction: str, reference: str) -> dict[str, float]:
    """Every score of one answer: ``{"em", "f1", "rouge_l", "contains"}`` (see :data:`METRICS`)."""
    return {
        "em": exact_match(prediction, reference),
        "f1": token_f1(prediction, reference),
        "rouge_l": rouge_l(prediction, reference),
        "contains": contains(prediction, reference),
    }


def best_score(prediction: str, references: Sequence[str]) -> dict[str, float]:
    """:func:`score_answer` against each acceptable reference, keeping each metric's best (SQuAD's
    rule for questions with several gold answers).

    Raises:
        ValueError: no reference given.
    """
    if not references:
        raise ValueError("need at least one reference answer")
    each = [score_answer(prediction, ref) for ref in references]
    return {m: max(s[m] for s in each) for m in METRICS}


def mean_scores(
    scored: Iterable[Mapping[str, float | None]], metrics: Sequence[str] = METRICS
) -> dict[str, float | None]:
    """The mean of each metric over ``scored`` (None for a metric no row has: nothing to average).
    Rows missing a metric, or holding None for it, are left out of that metric's mean."""
    sums: dict[str, float] = dict.fromkeys(metrics, 0.0)
    counts: dict[str, int] = dict.fromkeys(metrics, 0)
    for row in scored:
        for m in metrics:
            value = row.get(m)
            if value is not None:
                sums[m] += float(value)
                counts[m] += 1
    return {m: (sums[m] / counts[m] if counts[m] else None) for m in metrics}
