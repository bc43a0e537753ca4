"""Greedy chat generation that stops on the template's end-of-turn, shared by evaluate and chat."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from finetuneflow.models.chat import end_of_turn_tokens
from finetuneflow.records import Message


def _stop_ids(tokenizer: Any) -> list[int]:
    return sorted(set(end_of_turn_tokens(tokenizer).values()))


def _pad(tokenizer: Any, stop: list[int]) -> int:
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0])


def generate_reply(model: Any, tokenizer: Any, messages: list[Message], max_new_tokens: int = 128) -> str:
    """The model's answer to ``messages`` (greedy, deterministic), without the end-of-turn token."""
    import torch

    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
    stop = _stop_ids(tokenizer)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop,
            pad_token_id=_pad(tokenizer, stop),
        )
    return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)).strip()


def generate_replies(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[list[Message]],
    max_new_tokens: int = 128,
    batch_size: int = 8,
) -> list[str]:
    """Greedy answers to several conversations, ``batch_size`` at a time (left-padded prompts).

    One decoding step serves the whole batch: on a CPU, 8 answers of the default model took 7.8 s
    batched against 35.9 s one by one, with the same text. A finished answer's row keeps producing
    pad tokens until the batch's longest answer ends; they are dropped when decoding.
    """
    import torch

    stop = _stop_ids(tokenizer)
    answers: list[str] = []
    for start in range(0, len(conversations), max(1, batch_size)):
        batch = conversations[start : start + max(1, batch_size)]
        prompts = [
            tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in batch
        ]
        enc = tokenizer(
            prompts, add_special_tokens=False, return_tensors="pt", padding=True, padding_side="left"
        ).to(model.device)  # input_ids, attention_mask: (batch, longest prompt)
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stop,
                pad_token_id=_pad(tokenizer, stop),
            )
        width = enc["input_ids"].shape[1]
        answers += [str(tokenizer.decode(row[width:], skip_special_tokens=True)).strip() for row in out]
    return answers
