"""The chat workload of ``bench/train.py``: support-desk conversations of spread-out lengths.

Built deterministically from the quickstart example (``examples/quickstart/data``): the Q&A pairs of
``qa.csv`` become user/assistant turns and the sentences of ``handbook.md`` lengthen answers. For
each example a target length is drawn from an even spread over ``LENGTHS`` (tokens after the chat
template); an example starts as one to three Q&A turns (a third with a support-desk system prompt,
otherwise the template's default one) and grows by consecutive handbook sentences appended to its last
answer until it reaches the target; turns are dropped or the answer cut to its first sentence when
the start is already too long. Lengths land within a sentence (~30 tokens) of their targets and
never above the upper bound.
"""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path
from typing import Any

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart" / "data"
LENGTHS = (48, 423)  # tokenized lengths the examples spread over
SYSTEM = (
    "You are the Larkhollow support assistant. Answer questions about the Proofwell P3 proofing "
    "cabinet from the handbook. Be brief and practical."
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _qa_pairs() -> list[tuple[str, str]]:
    with (QUICKSTART / "qa.csv").open(encoding="utf-8", newline="") as fh:
        return [(row["question"].strip(), row["answer"].strip()) for row in csv.DictReader(fh)]


def _handbook_sentences() -> list[str]:
    """Prose sentences of the handbook (headings, lists and tables left out)."""
    text = (QUICKSTART / "handbook.md").read_text(encoding="utf-8")
    prose = [ln.strip() for ln in text.splitlines() if ln.strip() and ln.strip()[0].isalpha()]
    return [s for para in prose for s in _SENTENCE_END.split(para) if len(s.split()) >= 5]


def _messages(system: bool, turns: list[tuple[str, str]]) -> list[dict[str, str]]:
    out = [{"role": "system", "content": SYSTEM}] if system else []
    for question, answer in turns:
        out += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return out


def _grow(
    tokenizer: Any, messages: list[dict[str, str]], target: int, sentences: list[str], rng: random.Random
) -> list[dict[str, str]]:
    """Append consecutive handbook sentences to the last answer while the length stays <= target
    (allowing one sentence of overshoot below the upper bound)."""
    start = rng.randrange(len(sentences))
    for k in range(len(sentences)):
        if n_tokens(tokenizer, messages) >= target:
            break
        last = dict(messages[-1])
        last["content"] = last["content"] + " " + sentences[(start + k) % len(sentences)]
        longer = messages[:-1] + [last]
        if n_tokens(tokenizer, longer) > LENGTHS[1]:
            break
        messages = longer
    return messages


def _short_pair(
    shortest: list[tuple[int, list[dict[str, str]]]], target: int, rng: random.Random
) -> list[dict[str, str]]:
    """One of the (up to 3) longest one-sentence Q&A examples that fit ``target``, else the shortest."""
    fits = [m for n, m in shortest if n <= target][-3:]
    return rng.choice(fits) if fits else shortest[0][1]


def n_tokens(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    """Tokens of a conversation after the chat template (what both engines train on)."""
    return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


def make_rows(tokenizer: Any, count: int, seed: int, prefix: str = "bench") -> list[dict[str, Any]]:
    """``count`` dataset rows ``{"id", "source", "messages"}`` with lengths spread over LENGTHS."""
    rng = random.Random(seed)
    pairs, sentences = _qa_pairs(), _handbook_sentences()
    low, high = LENGTHS
    targets = [round(low + (high - low) * i / max(1, count - 1)) for i in range(count)]
    rng.shuffle(targets)
    one_sentence = [_messages(False, [(q, _SENTENCE_END.split(a)[0])]) for q, a in pairs]
    shortest = sorted(((n_tokens(tokenizer, m), m) for m in one_sentence), key=lambda nm: nm[0])
    rows = []
    for i, target in enumerate(targets):
        turns = rng.sample(pairs, rng.choice((1, 1, 1, 2, 2, 3)))
        messages = _messages(rng.random() < 1 / 3, turns)
        while len(turns) > 1 and n_tokens(tokenizer, messages) > target:
            turns = turns[1:]
            messages = _messages(messages[0]["role"] == "system", turns)
        if n_tokens(tokenizer, messages) > target:  # one turn and still too long: a short pair instead
            messages = _short_pair(shortest, target, rng)
        messages = _grow(tokenizer, messages, target, sentences, rng)
        rows.append({"id": f"{prefix}-{i:04d}", "source": "bench/train_data.py", "messages": messages})
    return rows
