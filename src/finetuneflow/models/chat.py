"""Chat and tokenizer helpers every step shares: end-of-turn tokens, the pad id, examples tokenized
with the model's chat template and their labels masked, and packed rows (training and evaluation
both compute losses on them).

Label rules (the invariants the tests pin):

* chat: only assistant turns are supervised, each *including* its end-of-turn token
  (``<|im_end|>`` for ChatML) and nothing after it; system/user turns and template glue are -100.
* text: every token is supervised, and an end-of-sequence token is appended.
* the first token of every example is -100: in a packed row it would otherwise be "predicted" from
  the previous example.

Packing puts several examples into one fixed-length row with ``position_ids`` restarting at 0 for
each; transformers turns restarting positions into a block-diagonal causal mask, so examples never
attend to each other (tests compare a packed row against each example run alone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from finetuneflow.errors import ChatTemplateError

IGNORE = -100
# End-of-turn markers of the common chat templates; whichever the tokenizer knows is used.
EOT_CANDIDATES = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>", "<|endoftext|>")


@dataclass
class Encoded:
    """One tokenized example; ``labels[i]`` is the target *at* position i (-100 = not trained)."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def n_supervised(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


@dataclass
class Row:
    """A packed training row of fixed length."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    n_examples: int
    real_tokens: int  # tokens that belong to examples (the rest is padding)


def end_of_turn_tokens(tokenizer: Any) -> dict[str, int]:
    """Token string -> id for every end-of-turn marker this tokenizer has (eos always included)."""
    found: dict[str, int] = {}
    vocab = tokenizer.get_vocab()
    for tok in EOT_CANDIDATES:
        if tok in vocab:
            found[tok] = vocab[tok]
    if tokenizer.eos_token is not None:
        found[tokenizer.eos_token] = tokenizer.eos_token_id
    return found


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return str(text)


def assistant_char_spans(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """Render ``messages`` and return the text plus the char span of each assistant answer,
    from its first character through its end-of-turn marker.

    Raises:
        ChatTemplateError: no chat template, or one that rewrites earlier turns (then prefixes do not match).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError("the tokenizer has no chat template; set one or use plain-text examples")
    full = _render(tokenizer, messages, False)
    eots = sorted(end_of_turn_tokens(tokenizer), key=len, reverse=True)
    spans: list[tuple[int, int]] = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], True)
        upto = _render(tokenizer, messages[: i + 1], False)
        if not (full.startswith(upto) and upto.startswith(prompt)):
            raise ChatTemplateError(
                "the chat template renders earlier turns differently depending on later ones, so the "
                "answer boundaries cannot be found; use a template without that behaviour"
            )
        turn = upto[len(prompt) :]
        ends = [turn.rfind(e) + len(e) for e in eots if e in turn]
        spans.append((len(prompt), len(prompt) + (max(ends) if ends else len(turn))))
    return full, spans


def encode_chat(tokenizer: Any, messages: list[dict[str, str]], max_len: int) -> Encoded:
    """Tokenize a conversation; only assistant answers (+ end-of-turn) carry labels."""
    text, spans = assistant_char_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    labels = [IGNORE] * len(ids)
    for k, (start, _end) in enumerate(enc["offset_mapping"]):
        if any(s <= start < e for s, e in spans):
            labels[k] = ids[k]
    return _finish(ids, labels, max_len)


def encode_text(tokenizer: Any, text: str, max_len: int) -> Encoded:
    """Tokenize raw text for continued pre-training: all tokens supervised, eos appended, and the BOS
    token first when the tokenizer puts one before plain text (Gemma; SmolLM2 does not)."""
    body = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    ids = bos_prefix(tokenizer) + body + [tokenizer.eos_token_id]
    return _finish(ids, list(ids), max_len)  # a BOS is the first token: never a label


def bos_prefix(tokenizer: Any) -> list[int]:
    """``[bos_id]`` when the tokenizer's own plain-text encoding starts with BOS, else ``[]``.

    Text without it is far from what such a model was trained on: Gemma 3 270M's perplexity of the
    general text was 199 without the BOS token and 20.4 with it (SmolLM2: 20.0, no BOS by default).
    A chat template that emits ``bos_token`` already carries it, so only plain text needs this.
    """
    bos = tokenizer.bos_token_id
    return [bos] if bos is not None and tokenizer("a")["input_ids"][:1] == [bos] else []


def _finish(ids: list[int], labels: list[int], max_len: int) -> Encoded:
    labels[0] = IGNORE  # nothing inside the example predicts its first token
    truncated = len(ids) > max_len
    return Encoded(ids[:max_len], labels[:max_len], truncated)


def encode_example(tokenizer: Any, row: dict[str, Any], max_len: int) -> Encoded:
    """Encode a dataset row (``messages`` or ``text``)."""
    if row.get("messages"):
        return encode_chat(tokenizer, row["messages"], max_len)
    if row.get("text"):
        return encode_text(tokenizer, row["text"], max_len)
    raise ValueError(f"example {row.get('id', '?')} has neither 'messages' nor 'text'")


def check_eos_not_masked(tokenizer: Any, encoded: list[Encoded]) -> None:
    """Refuse training that would teach the model never to stop.

    When the pad token *is* the end-of-turn token (SmolLM2, many Llama/Qwen setups), trainers that mask
    "padding" by token id also mask every real end-of-turn, and the tuned model rambles forever. We mask
    by position, so labels must still contain the end-of-turn token; this check proves they do.

    Raises:
        ChatTemplateError: pad == end-of-turn and no supervised end-of-turn token was found.
    """
    eot_ids = set(end_of_turn_tokens(tokenizer).values())
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id not in eot_ids:
        return
    supervised = [e for e in encoded if e.n_supervised > 0 and not e.truncated]
    if supervised and not any(set(e.labels) & eot_ids for e in supervised):
        raise ChatTemplateError(
            f"the pad token {tokenizer.pad_token!r} is also the end-of-turn token, and no training label "
            "contains it: the model would learn never to stop. Keep end-of-turn tokens in the labels "
            "(mask padding by position, not by token id) or set a distinct pad token."
        )


def pack(examples: list[Encoded], row_len: int, pad_id: int) -> list[Row]:
    """First-fit-decreasing packing of examples into rows of exactly ``row_len`` tokens.

    Deterministic for a given input order. Padding at a row's end gets label -100 and its own
    position ids (a separate block that attends only to itself).
    """
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i].input_ids), i))
    bins: list[list[int]] = []
    free: list[int] = []
    for i in order:
        size = len(examples[i].input_ids)
        slot = next((b for b, room in enumerate(free) if room >= size), None)
        if slot is None:
            bins.append([i])
            free.append(row_len - size)
        else:
            bins[slot].append(i)
            free[slot] -= size
    return [_row([examples[i] for i in members], row_len, pad_id) for members in bins]


def _row(members: list[Encoded], row_len: int, pad_id: int) -> Row:
    ids: list[int] = []
    labels: list[int] = []
    pos: list[int] = []
    for ex in members:
        ids += ex.input_ids
        labels += ex.labels
        pos += range(len(ex.input_ids))
    pad = row_len - len(ids)
    return Row(ids + [pad_id] * pad, labels + [IGNORE] * pad, pos + list(range(pad)), len(members), len(ids))


def pad_id(tokenizer: Any) -> int:
    """The id that fills rows: the tokenizer's pad token, else its end-of-sequence token."""
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)


def encode_rows(
    tokenizer: Any, records: list[dict[str, Any]], max_len: int
) -> tuple[list[Row], dict[str, int]]:
    """Encode and pack dataset rows; returns rows plus counts (examples, truncated, tokens)."""
    encoded: list[Encoded] = [encode_example(tokenizer, r, max_len) for r in records]
    check_eos_not_masked(tokenizer, encoded)
    rows = pack(encoded, max_len, pad_id(tokenizer))
    counts = {
        "examples": len(encoded),
        "truncated": sum(e.truncated for e in encoded),
        "tokens": sum(len(e.input_ids) for e in encoded),
        "supervised_tokens": sum(e.n_supervised for e in encoded),
        "rows": len(rows),
    }
    return rows, counts
