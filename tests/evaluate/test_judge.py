"""The LLM judge: its replies read in the shapes models give, its failures recorded (never fatal), and
end to end over real HTTP against the scripted OpenAI-compatible server: every answer graded, the
prompt and the model recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from llm_server import Reply, ScriptedServer

from evaluate.helpers import tiny_run
from finetuneflow.dataset.presets import ProviderConfig
from finetuneflow.dataset.provider import Provider
from finetuneflow.errors import CircuitOpen, ProviderError
from finetuneflow.evaluate import judge as jg
from finetuneflow.evaluate.step import EvalConfig, evaluate


@pytest.mark.parametrize(
    ("text", "verdict", "reason"),
    [
        ('{"verdict": "correct", "reason": "same facts"}', "correct", "same facts"),
        ('Sure:\n```json\n{"verdict": "Partly", "reason": "half"}\n```', "partly", "half"),
        ("WRONG. The reference says 65 C.", "wrong", "The reference says 65 C."),
    ],
)
def test_replies_are_read(text: str, verdict: str, reason: str) -> None:
    assert jg.parse_grade(text) == {"verdict": verdict, "reason": reason}


@pytest.mark.parametrize("text", ['{"verdict": "maybe"}', "I cannot tell.", ""])
def test_a_reply_without_a_verdict_is_an_error_not_a_grade(text: str) -> None:
    grade = jg.parse_grade(text)
    assert grade["verdict"] is None and "no verdict" in grade["error"]


class Failing:
    """A chat client whose calls fail: a provider error, then an open circuit."""

    def __init__(self) -> None:
        self.calls = 0

    def chat(self, messages: Any, **_: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise ProviderError("503 from the server", "server", 503)
        raise CircuitOpen("too many failures", "server")


def test_failures_are_recorded_and_an_open_circuit_stops_the_asking() -> None:
    client = Failing()
    judge = jg.Judge(client)
    assert judge.grade("q", "r", "a") == {"verdict": None, "error": "503 from the server"}
    assert judge.grade("q", "r", "a")["error"].startswith("judge stopped: too many failures")
    assert judge.grade("q", "r", "a")["error"].startswith("judge stopped")
    assert client.calls == 2  # nothing sent once the circuit is open
    assert judge.record()["stopped"].startswith("judge stopped")


def test_means_count_verdicts_and_score_them() -> None:
    grades = [{"verdict": "correct"}, {"verdict": "partly"}, {"verdict": "wrong"}, {"verdict": None}, None]
    assert jg.judge_means(grades) == {"score": 0.5, "correct": 1, "partly": 1, "wrong": 1, "error": 1}


def grader(body: dict[str, Any]) -> Reply:
    """Correct when the candidate answer mentions 'Fault', else wrong."""
    user = body["messages"][-1]["content"]
    answer = user.split("Candidate answer: ", 1)[1]
    verdict = "correct" if "Fault" in answer else "wrong"
    return Reply.valid({"verdict": verdict, "reason": f"graded {answer[:20]!r}"})


def test_every_answer_is_graded_through_the_provider(tiny_model: Path, tmp_path: Path) -> None:
    run = tiny_run(tmp_path, tiny_model)
    cfg = EvalConfig(answers=2, recall=1, forgetting=False, max_new_tokens=8, threads=1, judge=True)
    with ScriptedServer(grader, models=("judge-model",)) as srv:
        srv.script(Reply.malformed())  # the first grade is unreadable: recorded, not fatal
        with Provider(ProviderConfig(preset="custom", base_url=srv.url, model="judge-model")) as client:
            result = evaluate(run, cfg, judge=client)
        requests = [r.body for r in srv.chat_requests]
    rows = [r for s in result["sets"].values() for r in s["rows"]]
    assert len(requests) == 2 * len(rows) == 2 * 5  # base and tuned, eval 2 + heldout 2 + recall 1
    graded = [(r, side) for r in rows for side in ("base", "tuned")]
    first, *rest = graded
    assert (
        first[0][first[1]]["judge"]["verdict"] is None
        and "no verdict" in first[0][first[1]]["judge"]["error"]
    )
    for row, side in rest:
        expected = "correct" if "Fault" in row[side]["answer"] else "wrong"
        assert row[side]["judge"]["verdict"] == expected
    for body, (row, side) in zip(requests, graded, strict=True):  # what was asked, in order
        assert body["messages"][0] == {"role": "system", "content": jg.SYSTEM}
        assert body["messages"][1]["content"] == jg.TEMPLATE.format(
            question=row["question"], reference=row["reference"], answer=row[side]["answer"]
        )
        assert body["temperature"] == 0.0
    assert result["judge"]["model"] == "judge-model" and result["judge"]["system"] == jg.SYSTEM
    assert result["judge"]["template"] == jg.TEMPLATE
    means = result["sets"]["eval"]["means"]
    assert sum(means["base"]["judge"][v] for v in ("correct", "partly", "wrong", "error")) == 2
    assert json.loads((run / "evaluation.json").read_text())["judge"]["model"] == "judge-model"
