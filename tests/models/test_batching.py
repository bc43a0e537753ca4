"""Continuous batching: rows joining and leaving a running batch get the tokens they would get
alone (greedy: generate_reply's), and a seeded row repeats whatever shares its batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from finetuneflow.models.batching import DecodeBatch, Row

QUESTIONS = ["What is E3?", "What is E1 and why is the printer cover open?", "x y z", "hello", "What is E7?"]


@pytest.fixture(scope="module")
def tuned(tiny_tuned_run: Path) -> Any:
    from finetuneflow.models.load import load_tuned

    return load_tuned(tiny_tuned_run, "cpu")


def rows(tok: Any, n: int = 30, **sampling: Any) -> list[Row]:
    from finetuneflow.models.chat import end_of_turn_tokens
    from finetuneflow.models.generate import prompt_text

    stop = frozenset(end_of_turn_tokens(tok).values())
    prompts = [prompt_text(tok, [{"role": "user", "content": q}]) for q in QUESTIONS]
    return [Row(tok(p, add_special_tokens=False)["input_ids"], n, stop, **sampling) for p in prompts]


def drain(batch: DecodeBatch) -> None:
    while batch.drop_finished() or len(batch):
        if len(batch):
            batch.step()


def test_staggered_rows_get_their_greedy_answers(tuned: Any) -> None:
    from finetuneflow.models.generate import generate_reply

    model, tok = tuned.model, tuned.tokenizer
    expected = [generate_reply(model, tok, [{"role": "user", "content": q}], 30) for q in QUESTIONS]
    batch = DecodeBatch(model, tok.pad_token_id)
    todo = rows(tok)
    batch.admit(todo[:2])
    batch.step()
    batch.step()
    batch.admit(todo[2:3])  # joins two rows already 3 tokens in
    batch.step()
    batch.admit(todo[3:])
    drain(batch)
    assert [tok.decode(r.tokens, skip_special_tokens=True).strip() for r in todo] == expected
    assert all(r.finish in ("stop", "length") for r in todo)


def test_a_short_limit_leaves_the_batch_early(tuned: Any) -> None:
    tok = tuned.tokenizer
    short, long = rows(tok, n=2)[0], rows(tok, n=12)[1]
    batch = DecodeBatch(tuned.model, tok.pad_token_id)
    batch.admit([short, long])
    batch.step()
    assert batch.drop_finished() == [short] and len(short.tokens) == 2
    assert batch.rows == [long]
    drain(batch)
    assert len(long.tokens) == 12 or long.finish == "stop"


def test_a_seeded_row_repeats_in_any_company(tuned: Any) -> None:
    tok = tuned.tokenizer
    alone = rows(tok, temperature=1.3, top_p=0.9, seed=7)[0]
    batch = DecodeBatch(tuned.model, tok.pad_token_id)
    batch.admit([alone])
    drain(batch)
    crowd = rows(tok, temperature=1.3, top_p=0.9, seed=7)
    crowd[1:] = rows(tok, temperature=1.0, seed=99)[1:]
    batch.admit(crowd[1:3])
    batch.step()
    batch.admit([crowd[0], *crowd[3:]])
    drain(batch)
    assert crowd[0].tokens == alone.tokens
    other = rows(tok, temperature=1.3, top_p=0.9, seed=8)[0]
    batch.admit([other])
    drain(batch)
    assert other.tokens != alone.tokens
