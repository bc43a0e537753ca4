"""The memory's acceptance check, as a new user would run it (the README walkthrough): teach three
facts, ask about them (they are in the prompt and /sources), correct the wrong answers, restart
(fresh objects over the same project folder), ask again (the correction wins recall), turn the
corrections into examples, fine-tune on them and ask the tuned model. The real all-MiniLM-L6-v2
embedder (it loads in seconds, offline); the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from finetuneflow import api
from finetuneflow.api.memory import close_memories
from finetuneflow.cli import app

runner = CliRunner()
FACTS = {
    "What is E1?": "E1 means the water tank is empty.",
    "What is E2?": "E2 means the lid is open.",
    "What is E3?": "E3 means the filter is blocked.",
}


def ftf(*args: str, input: str | None = None) -> str:  # noqa: A002 - CliRunner's name
    result = runner.invoke(app, list(args), input=input, catch_exceptions=False, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_teach_ask_correct_restart_recall_tune(chat_project: str, tiny_model: Path, tmp_path: Path) -> None:
    p = chat_project
    ids = {}
    for question, fact in FACTS.items():
        ids[question] = int(ftf("memory", "teach", fact, "-p", p).split("#")[1].split()[0])
    typed = "".join(f"{q}\n/sources\n/correct {a}\n/reset\n" for q, a in FACTS.items())
    out = ftf("chat", "-p", p, "--max-new-tokens", "6", input=typed)
    log = api.exchange_log(p)
    assert len(log) == 3
    for exchange, question in zip(log, FACTS, strict=True):
        assert exchange["retrieved_ids"][0] == ids[question]  # the fact asked about, first
        assert FACTS[question] in out  # shown by /sources
        assert exchange["correction"] == FACTS[question]
    assert out.count("kept in memory as #") == 3

    close_memories()  # a restart: nothing of the chat's memory objects survives
    status = json.loads(ftf("memory", "status", "-p", p))
    assert status["by_kind"] == {"fact": 3, "correction": 3} and status["superseded"] == 3
    assert status["embedder"] == "all-MiniLM-L6-v2" and status["index"]["ok"]
    for question, answer in FACTS.items():
        top = api.recall(p, question, 1)[0]
        assert (top["kind"], top["corrects"]) == ("correction", ids[question])
        assert top["text"] == f"Q: {question}\nA: {answer}"
    again = ftf("chat", "-p", p, "What is E2?", "--max-new-tokens", "4")
    assert again and api.exchange_log(p)[-1]["retrieved"][0]["kind"] == "correction"

    report = json.loads(ftf("dataset", "from-chats", "-p", p).split("\nreview them")[0])
    assert (report["corrected"], report["added"]) == (3, 3)
    settings = tmp_path / "dataset.json"
    settings.write_text(json.dumps({"tokenizer": str(tiny_model), "eval_fraction": 0.0}))
    ftf("dataset", "build", "-p", p, "--config", str(settings))
    ftf("train", "-p", p, "--model", str(tiny_model), "--epochs", "60", "--lr", "1e-2",
        "--max-len", "128", "--precision", "fp32", "--threads", "1")  # fmt: skip
    answer = ftf("chat", "-p", p, "What is E2?", "--max-new-tokens", "12", "--no-memory").strip()
    # the tiny model learns the words before it learns to stop: what follows the answer is noise
    assert answer.startswith(FACTS["What is E2?"])
