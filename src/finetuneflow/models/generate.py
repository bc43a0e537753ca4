"""Chat generation shared by evaluate, chat and the server: one set of sampling settings, a whole
answer or a stream of text pieces, both stopping on the template's end-of-turn.

:func:`generate_reply` returns the answer at once; :func:`stream_reply` yields it as it is generated
(transformers' ``TextIteratorStreamer`` fed by ``generate`` in a thread); :func:`generate_replies`
answers several conversations greedily in left-padded batches (evaluation). Under greedy decoding the
two give the same text, which a test pins. Prompt length is measured the way the model sees it:
the chat template rendered, then tokenized (:func:`count_prompt_tokens`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from finetuneflow.config import setting
from finetuneflow.errors import ConfigError
from finetuneflow.models.chat import end_of_turn_tokens
from finetuneflow.records import Message

# tokenizers without a real limit report int(1e30) as model_max_length
_NO_LIMIT = 10**9
STREAM_TIMEOUT_S = 600.0  # a stuck generation thread ends the stream with an error, never a hang
# Answers decoded at once by generate_replies (the recall probe's, rehearsal's, `ftf evaluate`'s).
# One decoding step reads every weight whatever the batch, so wider batches cost little more per
# step: 48 answers of 48 tokens, SmolLM2-135M on two cores (AMD EPYC, AVX-512 BF16): 16.6 s in
# batches of 8, 11.4 of 16, 9.4 of 24 (bf16; fp32 26.0, 16.9, 14.3). The probe's 24 questions are
# one batch; wider ones would pad more, and their prompts' key/value caches grow with the batch.
DECODE_BATCH = 24
# The smallest sampling temperature other than 0 (greedy). Logits are divided by it before the
# softmax: a float32 logit of 0.1 over 1e-40 is inf (past 3.4e38) and the softmax of inf is NaN, so
# the draw fails. Over 1e-2, a model's logits (|x| < ~1e4) stay below ~1e6, finite; and a
# temperature that low already samples as near-greedily as anyone means to.
MIN_TEMPERATURE = 1e-2
SEED_RANGE = (-(2**63), 2**63 - 1)  # what torch's generators take (int64)


@dataclass
class Sampling:
    """How the next token is picked (temperature 0 = greedy, the same answer every time)."""

    max_new_tokens: int = setting(256, "Longest answer in tokens.")
    temperature: float = setting(0.0, "Sampling temperature; 0 = greedy (deterministic), else at least 0.01.")
    top_p: float = setting(1.0, "Nucleus sampling: keep the smallest set of tokens with this much mass.")
    seed: int | None = setting(None, "Seed of the sampler, for repeatable sampled answers (None = random).")

    def problems(self) -> list[str]:
        out = []
        if self.max_new_tokens < 1:
            out.append("max_new_tokens: must be >= 1")
        # NaN fails every comparison: each check below is written so that NaN lands in the problem
        if not (self.temperature == 0 or MIN_TEMPERATURE <= self.temperature < math.inf):
            out.append(f"temperature: must be >= 0 and finite: 0 (greedy) or at least {MIN_TEMPERATURE:g}")
        if not 0 < self.top_p <= 1:
            out.append("top_p: must be in (0, 1]")
        if self.seed is not None and not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            out.append("seed: must be a 64-bit signed integer (-2**63 to 2**63 - 1)")
        return out

    def check(self) -> Sampling:
        """``self``, or ConfigError listing every problem."""
        if problems := self.problems():
            raise ConfigError(problems, "sampling")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def prompt_text(tokenizer: Any, messages: list[Message]) -> str:
    """``messages`` rendered by the chat template, ending with the assistant's generation prompt."""
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def count_prompt_tokens(tokenizer: Any, messages: list[Message]) -> int:
    """Tokens the model reads for ``messages`` (template included)."""
    return len(tokenizer(prompt_text(tokenizer, messages), add_special_tokens=False)["input_ids"])


def context_window(model: Any, tokenizer: Any) -> int:
    """Tokens the model can attend to: its position limit, or the tokenizer's if smaller."""
    limits = [getattr(model.config, "max_position_embeddings", None), tokenizer.model_max_length]
    found = [int(n) for n in limits if isinstance(n, int) and 0 < n < _NO_LIMIT]
    return min(found) if found else 2048


def generate_reply(
    model: Any, tokenizer: Any, messages: list[Message], sampling: Sampling | int = 128
) -> str:
    """The model's answer to ``messages``, without the end-of-turn token. ``sampling`` is the settings,
    or just the most new tokens (greedy)."""
    import torch

    settings = sampling if isinstance(sampling, Sampling) else Sampling(max_new_tokens=sampling)
    ids = _prompt_ids(model, tokenizer, messages)
    with torch.no_grad():
        out = model.generate(**_generate_args(tokenizer, ids, settings.check()))
    return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)).strip()


def stream_reply(model: Any, tokenizer: Any, messages: list[Message], sampling: Sampling) -> Iterator[str]:
    """The model's answer to ``messages`` as text pieces, yielded as they are generated.

    Joined and stripped, the pieces are what :func:`generate_reply` returns for the same settings
    (greedy, or sampled with the same seed). Closing the iterator early (a consumer's ``break``,
    Ctrl-C) stops the generation at the next token.

    Raises:
        whatever ``model.generate`` raised in its thread, once the pieces before it are yielded.
    """
    from transformers import StoppingCriteriaList, TextIteratorStreamer

    ids = _prompt_ids(model, tokenizer, messages)
    streamer = TextIteratorStreamer(
        tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=STREAM_TIMEOUT_S
    )
    cancel = threading.Event()
    failed: list[BaseException] = []
    args = _generate_args(tokenizer, ids, sampling.check())
    args.update(streamer=streamer, stopping_criteria=StoppingCriteriaList([_Cancelled(cancel)]))

    def work() -> None:
        import torch

        try:
            with torch.no_grad():
                model.generate(**args)
        except BaseException as err:  # re-raised in the consumer's thread below
            failed.append(err)
            streamer.end()

    thread = threading.Thread(target=work, name="ftf-generate", daemon=True)
    thread.start()
    try:
        yield from streamer
    finally:
        cancel.set()
        thread.join()
    if failed:
        raise failed[0]


class _Cancelled:
    """A stopping criterion that ends generation once ``event`` is set (the consumer went away)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        # one flag per sequence of the batch: (batch,) bool
        return torch.full((input_ids.shape[0],), self.event.is_set(), device=input_ids.device)


def _prompt_ids(model: Any, tokenizer: Any, messages: list[Message]) -> Any:
    """(1, prompt_len) token ids of the rendered prompt, on the model's device."""
    text = prompt_text(tokenizer, messages)
    return tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)


def _generate_args(tokenizer: Any, ids: Any, sampling: Sampling) -> dict[str, Any]:
    """``model.generate`` arguments: stop on any end-of-turn token; sample unless greedy (the seed
    set here, so a sampled answer repeats for the same seed)."""
    import torch

    stop = sorted(set(end_of_turn_tokens(tokenizer).values()))
    args: dict[str, Any] = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "max_new_tokens": sampling.max_new_tokens,
        "eos_token_id": stop,
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0],
    }
    return {**args, **_decoding(sampling)}


def _decoding(sampling: Sampling) -> dict[str, Any]:
    """Greedy, or sampling from the whole distribution (no top-k) with the sampling's seed."""
    import torch

    if sampling.greedy:
        # also clear the model's own sampling defaults (generation_config.json), which warn otherwise
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    return {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}


def generate_replies(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[list[Message]],
    max_new_tokens: int = 128,
    batch_size: int = DECODE_BATCH,
    sampling: Sampling | None = None,
) -> list[str]:
    """Greedy answers to several conversations, ``batch_size`` at a time (left-padded prompts), or
    sampled ones with ``sampling`` (its temperature, top-p and seed; its length is ``max_new_tokens``).

    One decoding step serves the whole batch: on a CPU, 8 answers of the default model took 7.8 s
    batched against 35.9 s one by one, with the same text. A finished answer's row keeps producing
    pad tokens until the batch's longest answer ends; they are dropped when decoding. Batches of long
    prompts are narrower (:func:`batches`): the prompt's attention scores grow with its square.
    """
    import torch

    stop = sorted(set(end_of_turn_tokens(tokenizer).values()))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
    decoding = _decoding(sampling or Sampling())  # seeded once: the batches draw in turn
    texts = [prompt_text(tokenizer, m) for m in conversations]
    prompts = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    answers: list[str] = []
    for start, end in batches([len(ids) for ids in prompts], batch_size):
        enc = tokenizer.pad(
            {"input_ids": prompts[start:end]}, padding=True, padding_side="left", return_tensors="pt"
        ).to(model.device)  # input_ids, attention_mask: (batch, longest prompt)
        with torch.no_grad():
            out = model.generate(
                **enc, max_new_tokens=max_new_tokens, eos_token_id=stop, pad_token_id=pad, **decoding
            )
        width = enc["input_ids"].shape[1]
        answers += [str(tokenizer.decode(row[width:], skip_special_tokens=True)).strip() for row in out]
    return answers


# Prompt tokens squared a batch may hold: what 8 prompts of 2048 tokens held when batches were 8
# wide, so a wider batch never builds larger attention scores than those did (24 prompts up to
# ~1180 tokens, 8 up to 2048, 2 of 4096).
BATCH_SQUARE_TOKENS = 8 * 2048**2


def batches(lengths: Sequence[int], batch_size: int) -> list[tuple[int, int]]:
    """(start, end) of consecutive batches of prompts with these token ``lengths``: at most
    ``batch_size`` each, and at most ``BATCH_SQUARE_TOKENS`` in count x longest prompt squared
    (always at least one prompt)."""
    spans: list[tuple[int, int]] = []
    start, longest = 0, 0
    for i, n in enumerate(lengths):
        wider = max(longest, n)
        if i > start and (i - start >= batch_size or (i - start + 1) * wider**2 > BATCH_SQUARE_TOKENS):
            spans.append((start, i))
            start, wider = i, n
        longest = wider
    if start < len(lengths):
        spans.append((start, len(lengths)))
    return spans
