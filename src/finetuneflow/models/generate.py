"""Greedy chat generation that stops on the template's end-of-turn, shared by evaluate and chat."""

from __future__ import annotations

from typing import Any

from finetuneflow.models.chat import end_of_turn_tokens
from finetuneflow.records import Message


def generate_reply(model: Any, tokenizer: Any, messages: list[Message], max_new_tokens: int = 128) -> str:
    """The model's answer to ``messages`` (greedy, deterministic), without the end-of-turn token."""
    import torch

    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
    stop = sorted(set(end_of_turn_tokens(tokenizer).values()))
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0],
        )
    return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)).strip()
