"""The loop the issue asks for, through the CLI: chat, correct the wrong answers, turn the chats into
examples, build, fine-tune on them, and ask the tuned model, which now gives the corrected answer."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from finetuneflow import api
from finetuneflow.cli import app

runner = CliRunner()
FIXES = {f"What is E{i}?": f"E{i} means the lid is open." for i in range(4)}


def ftf(*args: str, input: str | None = None) -> str:  # noqa: A002 - CliRunner's name
    result = runner.invoke(app, list(args), input=input, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_corrections_are_learned_by_the_next_fine_tune(
    chat_project: str, tiny_model: Path, tmp_path: Path
) -> None:
    typed = "".join(f"{q}\n/correct {a}\n/reset\n" for q, a in FIXES.items())
    ftf("chat", "-p", chat_project, "--max-new-tokens", "6", "--no-memory", input=typed)
    before = [e["answer"] for e in api.exchange_log(chat_project)]
    assert len(before) == 4 and not any(a.startswith("E") for a in before)  # the old run got them wrong
    report = json.loads(ftf("dataset", "from-chats", "-p", chat_project).split("\nreview them")[0])
    assert (report["corrected"], report["added"], report["preference_pairs"]) == (4, 4, 4)
    listed = ftf("dataset", "review", "list", "-p", chat_project, "--origin", "chat")
    assert "4 examples" in listed and listed.count("chat") >= 4
    settings = tmp_path / "dataset.json"
    settings.write_text(json.dumps({"tokenizer": str(tiny_model), "eval_fraction": 0.0}))
    ftf("dataset", "build", "-p", chat_project, "--config", str(settings))
    out = ftf("train", "-p", chat_project, "--model", str(tiny_model), "--epochs", "60", "--lr", "1e-2",
              "--max-len", "128", "--precision", "fp32", "--threads", "1")  # fmt: skip
    run_id = out.split("run ")[1].split(":")[0].strip()
    answer = ftf("chat", "-p", chat_project, "What is E2?", "--max-new-tokens", "12", "--no-memory").strip()
    assert api.exchange_log(chat_project)[-1]["run_id"] == run_id  # the newest run answered
    # the tiny model learns the words before it learns to stop: what follows the answer is noise
    assert answer.startswith(FIXES["What is E2?"])
