"""An LLM judge: grades an answer against the reference as correct, partly or wrong, with a reason.

The step takes a chat client, never a provider name: ``api.evaluate`` builds one from the user's
provider settings (the dataset step's OpenAI-compatible client fits :class:`ChatClient`), tests pass
one pointed at a scripted server. The prompt and the model that answered are recorded with the
result, so a grade can be traced to what was asked and who answered.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from finetuneflow.errors import CircuitOpen, ProviderError

VERDICTS = {"correct": 1.0, "partly": 0.5, "wrong": 0.0}  # verdict -> its score in the means

SYSTEM = (
    "You grade answers to questions. You are given a question, a reference answer that is correct, "
    "and a candidate answer. Judge only whether the candidate states the same facts as the reference: "
    "ignore style, length and wording. Verdicts: 'correct' = it gives the reference's facts and "
    "nothing that contradicts them; 'partly' = some of the facts, or the facts together with a wrong "
    "or contradicting claim; 'wrong' = the facts are missing or wrong. "
    'Reply with JSON only: {"verdict": "correct" | "partly" | "wrong", "reason": "<one sentence>"}.'
)
TEMPLATE = "Question: {question}\n\nReference answer: {reference}\n\nCandidate answer: {answer}"
SCHEMA = {
    "title": "grade",
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": list(VERDICTS)},
        "reason": {"type": "string"},
    },
    "required": ["verdict", "reason"],
}


class ChatReply(Protocol):
    """What a chat client returns: the text and the model that wrote it."""

    text: str
    model: str


class ChatClient(Protocol):
    """An OpenAI-compatible chat client (``finetuneflow.dataset.provider.Provider`` is one)."""

    def chat(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        json_schema: dict[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> ChatReply: ...


class Judge:
    """Grades answers through ``client``; after the provider's circuit opens it stops asking and
    records why on every later grade."""

    def __init__(self, client: ChatClient, max_tokens: int = 256) -> None:
        self.client = client
        self.max_tokens = max_tokens
        self.models: Counter[str] = Counter()  # model names as the server reported them
        self.stopped: str | None = None

    def grade(self, question: str, reference: str, answer: str) -> dict[str, Any]:
        """``{"verdict", "reason"}``, or ``{"verdict": None, "error"}`` when no verdict came back."""
        if self.stopped:
            return {"verdict": None, "error": self.stopped}
        messages = [
            {"role": "system", "content": SYSTEM},
            {
                "role": "user",
                "content": TEMPLATE.format(question=question, reference=reference, answer=answer),
            },
        ]
        try:
            reply = self.client.chat(
                messages, json_schema=SCHEMA, temperature=0.0, max_tokens=self.max_tokens
            )
        except CircuitOpen as err:
            self.stopped = f"judge stopped: {err}"
            return {"verdict": None, "error": self.stopped}
        except ProviderError as err:
            return {"verdict": None, "error": str(err)}
        self.models[reply.model] += 1
        return parse_grade(reply.text)

    def record(self) -> dict[str, Any]:
        """What the result keeps about the judge: its model(s), prompt and scale."""
        return {
            "model": ", ".join(m for m, _ in self.models.most_common()) or None,
            "system": SYSTEM,
            "template": TEMPLATE,
            "temperature": 0.0,
            "scores": VERDICTS,
            "stopped": self.stopped,
        }


def parse_grade(text: str) -> dict[str, Any]:
    """The verdict and reason in a judge's reply: JSON (possibly fenced or with words around it),
    else a reply that starts with a verdict word."""
    found = re.search(r"\{.*\}", text, re.DOTALL)
    if found:
        try:
            data = json.loads(found.group(0))
        except ValueError:
            data = None
        if isinstance(data, dict) and str(data.get("verdict", "")).strip().lower() in VERDICTS:
            return {"verdict": str(data["verdict"]).strip().lower(), "reason": str(data.get("reason", ""))}
    word = re.match(r"\W*(correct|partly|wrong)\b\W*(.*)", text.strip(), re.IGNORECASE | re.DOTALL)
    if word:
        return {"verdict": word.group(1).lower(), "reason": word.group(2).strip()}
    return {"verdict": None, "error": f"no verdict in the judge's reply: {text[:200]!r}"}


def judge_means(grades: Iterable[dict[str, Any] | None]) -> dict[str, Any]:
    """Verdict counts and the mean score (correct 1, partly 0.5, wrong 0) over graded answers."""
    counts = Counter(g.get("verdict") or "error" for g in grades if g is not None)
    graded = sum(counts[v] for v in VERDICTS)
    score = sum(VERDICTS[v] * counts[v] for v in VERDICTS) / graded if graded else None
    return {"score": score, **{v: counts[v] for v in (*VERDICTS, "error")}}
