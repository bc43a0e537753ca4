"""Classification metrics in plain numpy: confusion matrix, accuracy, per-class and macro F1.

Conventions follow scikit-learn's defaults so numbers compare: rows of the confusion matrix are the
true class, columns the predicted one; a precision or recall whose denominator is 0 counts as 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(true: Sequence[int], pred: Sequence[int], n_classes: int) -> np.ndarray:
    """[n_classes, n_classes] counts: entry [t, p] = examples of class t predicted as p."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return matrix


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(num.shape, dtype=np.float64), where=den > 0)


def metrics_from_confusion(matrix: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support from a confusion matrix."""
    correct = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)  # true examples per class
    predicted = matrix.sum(axis=0)
    precision = _ratio(correct, predicted.astype(np.float64))
    recall = _ratio(correct, support.astype(np.float64))
    f1 = _ratio(2 * precision * recall, precision + recall)
    total = int(matrix.sum())
    per_class = {
        name: {
            "precision": round(float(precision[i]), 4),
            "recall": round(float(recall[i]), 4),
            "f1": round(float(f1[i]), 4),
            "support": int(support[i]),
        }
        for i, name in enumerate(names)
    }
    return {
        "examples": total,
        "accuracy": round(float(correct.sum() / total), 4) if total else 0.0,
        # macro over every class, also one absent from eval (F1 0), as scikit-learn does with labels=
        "macro_f1": round(float(f1.mean()), 4) if len(names) else 0.0,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


def classification_metrics(true: Sequence[int], pred: Sequence[int], names: list[str]) -> dict[str, Any]:
    """Metrics of predicted class ids ``pred`` against ``true``; ``names[i]`` is class i's label."""
    return metrics_from_confusion(confusion_matrix(true, pred, len(names)), names)


def majority_baseline(train_ids: Sequence[int], eval_ids: Sequence[int]) -> dict[str, Any]:
    """Accuracy of always answering the training set's most common class (ties: the lower id).

    A tuned classifier that does not beat this has learned nothing from the texts.
    """
    counts = Counter(train_ids)
    majority = min(counts, key=lambda c: (-counts[c], c))
    hits = sum(1 for t in eval_ids if t == majority)
    return {"class_id": int(majority), "accuracy": round(hits / len(eval_ids), 4) if eval_ids else 0.0}
