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


def _sliding_models() -> dict[str, Any]:
    """Random 2-layer models whose attention sees only the last 8 tokens: Gemma 3's mix of sliding
    and full layers, and Mistral's sliding layers throughout."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    shape = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=256,
                 sliding_window=8, pad_token_id=0)  # fmt: skip
    gemma = Gemma3TextConfig(**shape, layer_types=["sliding_attention", "full_attention"])
    mistral = MistralConfig(**shape)
    return {"gemma3": Gemma3ForCausalLM(gemma).eval(), "mistral": MistralForCausalLM(mistral).eval()}


def _greedy_alone(model: Any, prompt: list[int], n: int) -> list[int]:
    """The reference: each next token from a forward pass over the whole text, no cache."""
    import torch

    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits
            ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt) :]


@pytest.mark.parametrize("name", ["gemma3", "mistral"])
def test_rows_longer_than_a_sliding_window_get_their_greedy_answers(name: str) -> None:
    """Prompts past the window (8 tokens) beside short ones, joining a running batch: the caches
    keep every key (the window is the mask's work), so each row decodes what it decodes alone."""
    model = _sliding_models()[name]
    prompts = [list(range(3, 23)), [5, 6, 7], list(range(40, 53)), [9] * 11]
    todo = [Row(p, 6, frozenset()) for p in prompts]
    batch = DecodeBatch(model, 0)
    batch.admit(todo[:2])
    batch.step()
    batch.admit(todo[2:])  # joins two rows already 2 tokens in
    drain(batch)
    assert [r.tokens for r in todo] == [_greedy_alone(model, p, 6) for p in prompts]
