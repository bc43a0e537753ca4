"""Label-mask and packing invariants on the tiny ChatML tokenizer."""

from typing import Any

import pytest

from finetuneflow.errors import ChatTemplateError
from finetuneflow.models.chat import IGNORE, Encoded, check_eos_not_masked, encode_chat, encode_text, pack

CONVO = [
    {"role": "system", "content": "You are a support agent."},
    {"role": "user", "content": "What does E4 mean?"},
    {"role": "assistant", "content": "The cover is open."},
    {"role": "user", "content": "And the warranty?"},
    {"role": "assistant", "content": "It lasts two years."},
]


def supervised_runs(enc: Encoded) -> list[list[int]]:
    """Maximal runs of consecutive supervised token ids."""
    runs: list[list[int]] = []
    prev = False
    for tok, lab in zip(enc.input_ids, enc.labels, strict=True):
        if lab != IGNORE:
            if not prev:
                runs.append([])
            runs[-1].append(tok)
        prev = lab != IGNORE
    return runs


def test_labels_cover_exactly_assistant_answers_plus_end_of_turn(tiny_tokenizer: Any) -> None:
    enc = encode_chat(tiny_tokenizer, CONVO, 512)
    decoded = [tiny_tokenizer.decode(run) for run in supervised_runs(enc)]
    assert decoded == ["The cover is open.<|im_end|>", "It lasts two years.<|im_end|>"]
    # supervised labels equal the inputs at their position (no shifting inside the encoder)
    assert all(lab in (IGNORE, tok) for tok, lab in zip(enc.input_ids, enc.labels, strict=True))


def test_text_examples_supervise_everything_but_the_first_token(tiny_tokenizer: Any) -> None:
    enc = encode_text(tiny_tokenizer, "The warranty lasts two years.", 512)
    assert enc.labels[0] == IGNORE
    assert enc.labels[1:] == enc.input_ids[1:]
    assert enc.input_ids[-1] == tiny_tokenizer.eos_token_id


def test_truncation_is_flagged(tiny_tokenizer: Any) -> None:
    enc = encode_text(tiny_tokenizer, "word " * 200, 32)
    assert enc.truncated and len(enc.input_ids) == 32


def test_eos_pad_guard_refuses_masked_end_of_turn(tiny_tokenizer: Any) -> None:
    assert tiny_tokenizer.pad_token_id == tiny_tokenizer.eos_token_id  # the trap this guard is for
    good = encode_chat(tiny_tokenizer, CONVO, 512)
    check_eos_not_masked(tiny_tokenizer, [good])
    # what a trainer that masks "padding" by token id does to the labels
    eot = tiny_tokenizer.eos_token_id
    masked = [IGNORE if t == eot else lab for t, lab in zip(good.input_ids, good.labels, strict=True)]
    broken = Encoded(good.input_ids, masked)
    with pytest.raises(ChatTemplateError, match="never to stop"):
        check_eos_not_masked(tiny_tokenizer, [broken])


def test_template_without_stable_prefixes_is_refused(tiny_tokenizer: Any) -> None:
    tok = tiny_tokenizer.__class__.from_pretrained(tiny_tokenizer.name_or_path)
    # a template that renders history differently once the conversation grows
    tok.chat_template = (
        "{% for m in messages %}{{ messages|length }}:{{ m['content'] }}<|im_end|>{% endfor %}"
    )
    with pytest.raises(ChatTemplateError, match="renders earlier turns differently"):
        encode_chat(tok, CONVO, 512)


def test_packing_fills_rows_and_resets_positions() -> None:
    exs = [Encoded(list(range(1, n + 1)), [IGNORE] + list(range(2, n + 1))) for n in (5, 3, 7, 2, 6)]
    rows = pack(exs, 10, pad_id=0)
    assert all(len(r.input_ids) == len(r.labels) == len(r.position_ids) == 10 for r in rows)
    assert sum(r.real_tokens for r in rows) == 23
    assert sum(r.n_examples for r in rows) == 5
    assert len(rows) == 3  # 23 tokens in rows of 10: first-fit-decreasing needs only three
    for r in rows:
        starts = [i for i, p in enumerate(r.position_ids) if p == 0]
        assert len(starts) == r.n_examples + (r.real_tokens < 10)
        assert all(lab == IGNORE for lab in r.labels[r.real_tokens :])
    assert pack(exs, 10, 0) == rows  # deterministic
