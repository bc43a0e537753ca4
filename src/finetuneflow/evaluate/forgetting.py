"""The forgetting check's text half: perplexity of base and tuned on general prose shipped in the
package (``evaluate/data/general_text.md``, written for this check). A tuned model that lost general
ability finds ordinary text less likely; the general questions (a set of their own) show the same
in answers."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from finetuneflow.evaluate.sets import general_text
from finetuneflow.models.chat import encode_rows
from finetuneflow.models.load import Tuned
from finetuneflow.models.loss import mean_loss


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, each joined into one line."""
    return [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]


def text_perplexity(
    tuned: Tuned, max_len: int, batch_size: int, amp: Callable[[], AbstractContextManager[Any]]
) -> dict[str, Any]:
    """Loss and perplexity of base and tuned on the general text, one example per paragraph, and the
    relative change of perplexity (``change`` > 0: the tuned model finds general text less likely)."""
    records = [{"text": p} for p in paragraphs(general_text())]
    rows, counts = encode_rows(tuned.tokenizer, records, max_len)
    with tuned.base() as base_model:
        base = mean_loss(base_model, rows, tuned.device, batch_size, amp)
    after = mean_loss(tuned.model, rows, tuned.device, batch_size, amp)
    base_ppl, tuned_ppl = math.exp(min(base, 50)), math.exp(min(after, 50))
    return {
        "paragraphs": counts["examples"],
        "tokens": counts["supervised_tokens"],
        "truncated": counts["truncated"],
        "base_loss": round(base, 4),
        "tuned_loss": round(after, 4),
        "base_perplexity": round(base_ppl, 3),
        "tuned_perplexity": round(tuned_ppl, 3),
        "change": round(tuned_ppl / base_ppl - 1, 4),
    }
