"""The better / same / worse rule: a seeded paired bootstrap of per-question differences."""

from __future__ import annotations

import pytest

from finetuneflow.text.verdict import MIN_QUESTIONS, bootstrap_interval, compare, sentence


def test_interval_of_a_constant_difference_is_that_difference() -> None:
    assert bootstrap_interval([0.3] * 6, 500, 0, 0.95) == pytest.approx((0.3, 0.3))


def test_interval_of_two_values_by_hand() -> None:
    # resampling [0, 1] twice: means 0, 0.5, 1 with chances 1/4, 1/2, 1/4; a 95% interval spans 0..1,
    # a 40% interval (30th..70th percentile) only the middle value
    assert bootstrap_interval([0.0, 1.0], 4000, 0, 0.95) == pytest.approx((0.0, 1.0))
    assert bootstrap_interval([0.0, 1.0], 4000, 0, 0.40) == pytest.approx((0.5, 0.5))


def test_interval_is_seeded() -> None:
    diffs = [0.1, -0.3, 0.5, 0.0, 0.2, -0.1, 0.4]
    assert bootstrap_interval(diffs, 300, 7, 0.9) == bootstrap_interval(diffs, 300, 7, 0.9)
    assert bootstrap_interval(diffs, 300, 7, 0.9) != bootstrap_interval(diffs, 300, 8, 0.9)


@pytest.mark.parametrize(
    ("base", "tuned", "verdict"),
    [
        ([0.1] * 8, [0.6] * 8, "better"),
        ([0.2, 0.1, 0.3, 0.0, 0.2, 0.1, 0.4, 0.1], [0.5, 0.3, 0.4, 0.2, 0.6, 0.1, 0.5, 0.3], "better"),
        ([0.6] * 8, [0.1] * 8, "worse"),
        ([0.5] * 8, [1.0, 0.0] * 4, "same"),  # +0.5 and -0.5 alternate: mean 0, interval spans it
        ([0.3] * 8, [0.3] * 8, "same"),  # nothing changed
        ([0.1] * 8, [0.1] * 7 + [0.9], "same"),  # one question moved: resamples that miss it give 0
    ],
)
def test_verdicts(base: list[float], tuned: list[float], verdict: str) -> None:
    c = compare(base, tuned, resamples=1000, seed=0)
    assert c.verdict == verdict
    assert c.diff == pytest.approx(sum(tuned) / len(tuned) - sum(base) / len(base))
    assert c.low <= c.diff <= c.high


def test_too_few_questions_are_the_same_and_say_why() -> None:
    n = MIN_QUESTIONS - 1
    c = compare([0.0] * n, [1.0] * n)
    assert c.verdict == "same" and c.low == c.high == 1.0
    assert f"at least {MIN_QUESTIONS}" in sentence(c, "questions")


def test_unpaired_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="paired"):
        compare([0.1, 0.2], [0.3])
    with pytest.raises(ValueError):
        compare([], [])


@pytest.mark.parametrize(
    ("tuned", "word"),
    [([0.6] * 6, "**better** than"), ([0.0] * 6, "**worse** than"), ([0.3] * 6, "**the same** as")],
)
def test_sentence_says_it_plainly_with_the_numbers(tuned: list[float], word: str) -> None:
    c = compare([0.3] * 6, tuned)
    text = sentence(c, "questions it was not trained on")
    assert text.startswith("On 6 questions it was not trained on, the tuned model answers ")
    assert word in text and f"token F1 0.30 → {tuned[0]:.2f}" in text and "95% CI" in text
    assert "loss" not in text
    assert sentence(c.to_json(), "questions it was not trained on") == text  # from the stored JSON too
