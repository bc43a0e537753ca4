"""Top-1 agreement: a flip where the trained model itself was torn between two tokens is not a
disagreement; a flip where it was sure is."""

from __future__ import annotations

import numpy as np

from finetuneflow.export import verify

STOP = 4


def _fn(rows: np.ndarray) -> verify.LogitsFn:
    """Logits for any ids: the given rows for the prompt's positions, then 'stop' for generated ones."""
    stop = np.full(rows.shape[1], -5.0, dtype=np.float32)
    stop[STOP] = 5.0

    def run(ids: list[int]) -> np.ndarray:
        extra = max(0, len(ids) - len(rows))
        return np.vstack([rows[: len(ids)], np.tile(stop, (extra, 1))]).astype(np.float32)

    return run


def _reference(rows: np.ndarray) -> verify.Reference:
    fn, prompt = _fn(rows), [1, 2, 3]
    margins: list[list[float]] = []
    turn = verify.greedy(fn, prompt, {STOP}, margins=margins)
    return verify.Reference([prompt], [fn(prompt)], [turn], {STOP}, margins)


def _rows(*pairs: tuple[float, float]) -> np.ndarray:
    """One row per position: logits of tokens 0 and 1, the rest far below (token 4 stops)."""
    rows = np.full((len(pairs), 5), -5.0, dtype=np.float32)
    for i, (a, b) in enumerate(pairs):
        rows[i, :2] = a, b
    return rows


def test_a_near_tie_may_go_either_way_in_a_quantized_artefact() -> None:
    ref = _reference(_rows((1.0, 0.95), (2.0, 0.0), (2.0, 0.0)))  # position 0: token 0 by 0.05
    flipped = _rows((0.95, 1.0), (2.0, 0.1), (1.9, 0.0))  # q8_0-sized noise flips only the tie
    verdict = verify.check(ref, _fn(flipped), "q8_0", {STOP})
    assert verdict.passed and verdict.top1_agreement == 1.0 and verdict.near_ties == 1


def test_a_confident_flip_still_counts_against_the_artefact() -> None:
    ref = _reference(_rows((2.0, 0.0), (2.0, 0.0), (2.0, 0.0)))
    flipped = _rows((0.0, 2.0), (2.0, 0.0), (2.0, 0.0))  # the trained model was sure of token 0
    verdict = verify.check(ref, _fn(flipped), "q8_0", {STOP})
    assert verdict.top1_agreement == 2 / 3 and verdict.near_ties == 0
    assert not verdict.passed and "top-1 agreement 0.667 < 0.9" in verdict.problems[0]


def _talker(first: tuple[float, float]) -> verify.LogitsFn:
    """After the prompt [1, 2, 3]: ``first`` = (stop, token 0) logits at the first generated step,
    then token 0 for ever (a turn that never ends once it goes on)."""

    def run(ids: list[int]) -> np.ndarray:
        rows = np.full((len(ids), 5), -5.0, dtype=np.float32)
        rows[:, 0] = 5.0
        if len(ids) >= 3:
            rows[2, STOP], rows[2, 0] = first
        return rows

    return run


def test_a_quantized_artefact_may_go_on_where_the_trained_model_barely_stopped() -> None:
    prompt, margins = [1, 2, 3], list[list[float]]()
    trained = _talker((5.0, 4.9))  # stop wins by 0.1: a near tie
    turn = verify.greedy(trained, prompt, {STOP}, margins=margins)
    ref = verify.Reference([prompt], [trained(prompt)], [turn], {STOP}, margins)
    assert turn == [STOP]
    verdict = verify.check(ref, _talker((4.9, 5.0)), "q8_0", {STOP})  # goes on, never stops
    assert verdict.passed, verdict.problems


def test_a_quantized_artefact_that_runs_on_where_the_trained_model_surely_stopped_fails() -> None:
    prompt, margins = [1, 2, 3], list[list[float]]()
    trained = _talker((5.0, 2.0))  # stop wins by 3
    turn = verify.greedy(trained, prompt, {STOP}, margins=margins)
    ref = verify.Reference([prompt], [trained(prompt)], [turn], {STOP}, margins)
    verdict = verify.check(ref, _talker((4.9, 5.0)), "q8_0", {STOP})
    assert not verdict.passed
    assert "the trained model ends its turn on a prompt where the artefact does not" in verdict.problems
