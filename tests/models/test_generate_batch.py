"""Batched greedy answers are the answers one at a time: left padding changes no answer."""

from __future__ import annotations

from pathlib import Path

from finetuneflow.models.generate import generate_replies, generate_reply


def test_batched_answers_equal_one_by_one(tiny_model: Path) -> None:
    import torch

    from finetuneflow.models.load import load_causal_lm, load_tokenizer

    model, tok = load_causal_lm(tiny_model).eval(), load_tokenizer(tiny_model)
    # the tiny model's head is tied to its embeddings, so it repeats the prompt's last token (a
    # newline, stripped away); a head of its own makes it say different things to different prompts
    torch.manual_seed(0)
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight))
    conversations = [  # prompts of different lengths, so the batch needs padding
        [{"role": "user", "content": "What is E4?"}],
        [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "How long is the warranty?"},
        ],
        [{"role": "user", "content": "Hello"}],
    ]
    one_by_one = [generate_reply(model, tok, c, 12) for c in conversations]
    assert generate_replies(model, tok, conversations, 12, batch_size=3) == one_by_one
    assert generate_replies(model, tok, conversations, 12, batch_size=2) == one_by_one
    assert len(set(one_by_one)) == 3 and all(one_by_one), one_by_one
