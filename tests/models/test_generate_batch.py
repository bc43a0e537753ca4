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


def test_batches_narrow_for_long_prompts() -> None:
    from finetuneflow.models.generate import BATCH_SQUARE_TOKENS, batches

    assert batches([], 24) == []
    assert batches([40] * 50, 24) == [(0, 24), (24, 48), (48, 50)]  # short prompts: full width
    assert batches([40] * 3, 0) == [(0, 1), (1, 2), (2, 3)]
    # 2048-token prompts: 8 at most, however wide the batch may be; a longer prompt goes alone
    assert batches([100] * 5 + [2048] * 10, 24) == [(0, 8), (8, 15)]
    assert batches([10, 9000, 10], 24) == [(0, 1), (1, 2), (2, 3)]
    for start, end in batches([1500, 30, 1200, 700] * 10, 24):
        longest = max(([1500, 30, 1200, 700] * 10)[start:end])
        assert (end - start) * longest**2 <= BATCH_SQUARE_TOKENS or end - start == 1
