"""Generation shared by evaluate, chat and the server: streaming gives the whole answer's text, the
seed repeats a sampled answer, bad settings are refused at once, and a dropped stream stops."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from finetuneflow.errors import ConfigError
from finetuneflow.models.generate import (
    Sampling,
    context_window,
    count_prompt_tokens,
    generate_reply,
    prompt_text,
    stream_reply,
)

QUESTION = [{"role": "user", "content": "What is E3?"}]


@pytest.fixture(scope="module")
def tuned(tiny_tuned_run: Path) -> Any:
    from finetuneflow.models.load import load_tuned

    return load_tuned(tiny_tuned_run)


def test_streaming_gives_the_same_text_as_a_whole_answer_when_greedy(tuned: Any) -> None:
    settings = Sampling(max_new_tokens=24)
    whole = generate_reply(tuned.model, tuned.tokenizer, QUESTION, settings)
    pieces = list(stream_reply(tuned.model, tuned.tokenizer, QUESTION, settings))
    assert whole.startswith("F")  # the trained run answers in words ("Fault ..."), not an empty turn
    assert len([p for p in pieces if p]) > 1  # streamed in pieces, not one block at the end
    assert "".join(pieces).strip() == whole


def test_a_seed_repeats_a_sampled_answer(tuned: Any) -> None:
    hot = Sampling(max_new_tokens=16, temperature=1.5, top_p=0.95, seed=7)
    first = generate_reply(tuned.model, tuned.tokenizer, QUESTION, hot)
    assert "".join(stream_reply(tuned.model, tuned.tokenizer, QUESTION, hot)).strip() == first
    others = {
        generate_reply(tuned.model, tuned.tokenizer, QUESTION, Sampling(16, 1.5, 0.95, s)) for s in range(4)
    }
    assert len(others) > 1  # temperature > 0 really samples


def test_closing_a_stream_stops_generation(tuned: Any) -> None:
    stream = stream_reply(tuned.model, tuned.tokenizer, QUESTION, Sampling(max_new_tokens=5000))
    next(stream)
    stream.close()  # returns at the next token instead of after 5000 of them
    assert not [t for t in __import__("threading").enumerate() if t.name == "ftf-generate"]


def test_an_int_means_greedy_with_that_many_tokens(tuned: Any) -> None:
    assert generate_reply(tuned.model, tuned.tokenizer, QUESTION, 12) == generate_reply(
        tuned.model, tuned.tokenizer, QUESTION, Sampling(max_new_tokens=12)
    )


def test_bad_sampling_settings_are_all_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        Sampling(max_new_tokens=0, temperature=-1, top_p=0).check()
    assert [e.split(":")[0] for e in err.value.errors] == ["max_new_tokens", "temperature", "top_p"]


def test_prompt_tokens_count_the_template(tiny_model: Path, tiny_tokenizer: Any) -> None:
    from finetuneflow.models.load import load_causal_lm

    text = prompt_text(tiny_tokenizer, QUESTION)
    assert text.endswith("<|im_start|>assistant\n")
    bare = len(tiny_tokenizer("What is E3?", add_special_tokens=False)["input_ids"])
    assert count_prompt_tokens(tiny_tokenizer, QUESTION) > bare  # role markers and end-of-turn too
    assert context_window(load_causal_lm(tiny_model), tiny_tokenizer) == 1024  # max_position_embeddings
