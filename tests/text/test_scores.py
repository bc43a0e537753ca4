"""Answer scores against values worked out by hand (SQuAD's normalisation and F1, ROUGE-L's LCS)."""

from __future__ import annotations

import pytest

from finetuneflow.text.scores import (
    best_score,
    contains,
    exact_match,
    mean_scores,
    normalize_answer,
    rouge_l,
    score_answer,
    token_f1,
)


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("The  Paris!", "paris"),
        ("An apple, a day.", "apple day"),
        ("Theatre in the round", "theatre in round"),  # whole words only: 'Theatre' keeps its 'the'
        ("E21: heater cut-out (65 °C)", "e21 heater cutout 65 °c"),  # ASCII punctuation deleted, not spaced
        ("«Zürich»", "zürich"),  # Unicode punctuation too, letters kept
    ],
)
def test_normalisation_is_squads(text: str, normal: str) -> None:
    assert normalize_answer(text) == normal


def test_exact_match_after_normalisation() -> None:
    assert exact_match("Paris.", "paris") == 1.0
    assert exact_match("The Paris", "Paris") == 1.0
    assert exact_match("Paris, France", "Paris") == 0.0
    assert exact_match("", "") == 1.0 and exact_match("", "Paris") == 0.0


@pytest.mark.parametrize(
    ("pred", "ref", "f1"),
    [
        # cat sat on mat / cat is on mat: 3 shared of 4 and 4 -> P = R = 0.75
        ("the cat sat on the mat", "the cat is on the mat", 0.75),
        # 5 words vs 1, 1 shared: P = 0.2, R = 1 -> 2 * 0.2 / 1.2
        ("The capital of France is Paris.", "Paris", 1 / 3),
        # a multiset: 'yes' shared once -> P = 1/3, R = 1 -> 0.5
        ("yes yes yes", "yes", 0.5),
        # 'very' shared twice (as often as in both): P = R = 2/3
        ("very very good", "very very bad", 2 / 3),
        # all 3 reference words found among 4: P = 3/4, R = 1
        ("heater plate cut out", "heater cut out", 2 * (3 / 4) * 1 / (3 / 4 + 1)),
        ("wrong answer", "Paris", 0.0),
        ("", "", 1.0),
        ("", "Paris", 0.0),
        ("a the an", "Paris", 0.0),  # nothing left after normalisation
    ],
)
def test_token_f1(pred: str, ref: str, f1: float) -> None:
    assert token_f1(pred, ref) == pytest.approx(f1)


@pytest.mark.parametrize(
    ("pred", "ref", "value"),
    [
        # LCS of 'the cat sat on the mat' and 'the cat is on the mat' = the cat on the mat (5 of 6)
        ("the cat sat on the mat", "the cat is on the mat", 5 / 6),
        # order matters, unlike F1: LCS of 'b a' and 'a b' is 1 word -> P = R = 0.5
        ("b a", "a b", 0.5),
        # 3 of 4 words in order; ASCII-only tokenizers would drop the 'ü' and split 'zürich'
        ("Zürich liegt am See", "Zürich liegt am Zürichsee", 0.75),
        ("Paris.", "paris", 1.0),
        ("", "", 1.0),
        ("", "Paris", 0.0),
    ],
)
def test_rouge_l(pred: str, ref: str, value: float) -> None:
    assert rouge_l(pred, ref) == pytest.approx(value)


def test_rouge_l_is_the_packages_own_on_ascii_text() -> None:
    from rouge_score import rouge_scorer

    plain = rouge_scorer.RougeScorer(["rougeL"])
    pairs = [
        ("The heater plate passed 65 C and the cut-out tripped.", "E21: the heater plate passed 65 C."),
        ("Wi-Fi join failed; service unreachable", "E71 means Wi-Fi join failed, E72 service unreachable."),
    ]
    for pred, ref in pairs:
        assert rouge_l(pred, ref) == pytest.approx(plain.score(ref, pred)["rougeL"].fmeasure)


def test_contains_whole_words_and_alternatives() -> None:
    assert contains("The capital of France is Paris.", "Paris") == 1.0
    assert contains("Parisian food is good", "Paris") == 0.0
    assert contains("It is the Pacific Ocean.", "the Pacific Ocean") == 1.0
    assert contains("A spider has 8 legs.", "eight") == 0.0
    best = best_score("A spider has 8 legs.", ["eight", "8"])
    assert best["contains"] == 1.0 and best["f1"] == pytest.approx(token_f1("A spider has 8 legs.", "8"))
    with pytest.raises(ValueError):
        best_score("x", [])


def test_score_answer_has_every_metric() -> None:
    assert score_answer("Paris", "Paris") == {"em": 1.0, "f1": 1.0, "rouge_l": 1.0, "contains": 1.0}


def test_means_skip_missing_values() -> None:
    rows = [{"f1": 0.5, "nll": None}, {"f1": 1.0, "nll": 2.0}, {"f1": 0.0}]
    assert mean_scores(rows, ("f1", "nll", "em")) == {"f1": pytest.approx(0.5), "nll": 2.0, "em": None}
