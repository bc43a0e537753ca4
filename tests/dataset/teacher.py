"""A scripted "teacher" for generation tests: answers the generator's prompts like a diligent model.

It reads the chunk between <source> tags and writes the asked number of pairs whose answers are
sentences of that chunk (so they are grounded); repair prompts get the JSON they ask for; judge
prompts get scores. Deterministic, so tests can count exactly.
"""

from __future__ import annotations

import json
import re
from typing import Any

from llm_server import Reply

_SOURCE = re.compile(r"<source>\n(.*?)\n</source>", re.S)
_COUNT = re.compile(r"Write (\d+) question/answer pairs")
_PAIRS = re.compile(r"^\[(\d+)\] Q:", re.M)


def sentences(text: str) -> list[str]:
    parts = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.strip()) > 20]
    return parts or [text.strip()]


def pairs_for(text: str, n: int) -> list[dict[str, str]]:
    found = sentences(text)
    out = []
    for i in range(n):
        s = found[i % len(found)]
        words = [w for w in re.findall(r"[A-Za-z]{4,}", s)][:3] or ["this"]
        out.append({"question": f"Question {i} about {' '.join(words)}: what is stated?", "answer": s})
    return out


def teacher(body: dict[str, Any]) -> Reply:
    prompt = str((body.get("messages") or [{}])[-1].get("content", ""))
    if "Score each question/answer pair" in prompt:
        n = len(_PAIRS.findall(prompt))
        scores = [
            {"index": i, "accuracy": 9, "relevance": 8, "clarity": 9, "usefulness": 8} for i in range(n)
        ]
        return Reply(json.dumps({"scores": scores}))
    if prompt.startswith("This output should be JSON"):
        inner = prompt.split("<output>\n", 1)[1].rsplit("\n</output>", 1)[0]
        return Reply(
            json.dumps({"examples": [{"question": "Which repair happened here?", "answer": inner[:40]}]})
        )
    source = _SOURCE.search(prompt)
    count = _COUNT.search(prompt)
    if not source or not count:
        return Reply("I cannot help with that.")
    return Reply(json.dumps({"examples": pairs_for(source.group(1), int(count.group(1)))}))
