"""``ftf evaluate`` → ``api.evaluate`` → the step: the answer table of every set, the verdict sentence
last; ``--judge`` grades through the provider the flags name (a scripted loopback server)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from evaluate.helpers import tiny_run
from llm_server import Reply, ScriptedServer
from typer.testing import CliRunner

from finetuneflow import paths
from finetuneflow.cli import app
from finetuneflow.state import session_scope
from finetuneflow.state.repo import get_or_create_project

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("cli-eval"), tiny_model)


@pytest.fixture
def project(trained: Path) -> str:
    """Project 'ev' holding a copy of the tiny run as run 'r1'."""
    with session_scope() as s:
        get_or_create_project(s, "ev")
    shutil.copytree(trained, paths.project_dir("ev") / "runs" / "r1")
    return "ev"


def ftf(*args: str) -> str:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_tables_per_set_then_the_sentence(project: str) -> None:
    out = ftf(
        "evaluate", "-p", project, "-r", "r1", "--answers", "2", "--recall", "1", "--max-new-tokens", "4"
    )
    for title in (
        "eval split: 2 questions",
        "held-out questions (closed book): 2",
        "recall probe",
        "general",
    ):
        assert title in out
    assert "What is E99?" in out and "Fault 99: the printer cover is open." in out  # question, reference
    assert "base → tuned, means per set" in out and "general-text perplexity" in out
    sentence = json.loads((paths.project_dir(project) / "runs/r1/evaluation.json").read_text())["verdict"][
        "sentence"
    ]
    assert sentence.startswith("On 4 questions it was not trained on, the tuned model answers **the same**")
    assert " ".join(out.split()).endswith(
        " ".join(sentence.replace("**", "").split())
    )  # last, wrapped or not


def test_judge_flags_pick_the_provider(project: str) -> None:
    verdict = {"verdict": "partly", "reason": "some facts"}
    with ScriptedServer(lambda body: Reply.valid(verdict), models=("judge-model",)) as srv:
        out = ftf(
            "evaluate", "-p", project, "-r", "r1", "--answers", "1", "--recall", "0", "--no-forgetting",
            "--max-new-tokens", "4", "--judge", "--preset", "custom", "--base-url", srv.url,
            "--model", "judge-model",
        )  # fmt: skip
        assert len(srv.chat_requests) == 4  # eval 1 + heldout 1, base and tuned
    assert "0.50 → 0.50" in out  # the judge column: partly = 0.5 on both sides
    assert "general" not in out.split("means per set")[0]  # --no-forgetting: no general set


def test_judge_without_a_model_is_a_config_error(project: str) -> None:
    result = runner.invoke(app, ["evaluate", "-p", project, "-r", "r1", "--judge", "--preset", "custom"])
    assert result.exit_code == 2 and "model" in result.output


def test_with_a_memory_the_memory_columns_and_sentences_are_printed(project: str) -> None:
    from finetuneflow import api
    from finetuneflow.api.memory import close_memories
    from finetuneflow.memory.config import MemoryConfig

    args = ["evaluate", "-p", project, "-r", "r1", "--answers", "2", "--recall", "0", "--no-forgetting",
            "--max-new-tokens", "4", "--memories", "2"]  # fmt: skip
    refused = runner.invoke(app, [*args, "--memory", "on"], env={"COLUMNS": "200"})
    assert refused.exit_code != 0 and "memory: on, but project 'ev'" in " ".join(refused.output.split())
    close_memories()
    try:
        api.teach(
            project, "Error E99 means the printer cover is open.", config=MemoryConfig(embedder="hash:256")
        )
        out = " ".join(ftf(*args).split())
    finally:
        close_memories()
    assert "base+memory" in out and "tuned+memory" in out and "tuned → tuned+memory" in out
    assert "the base model with memories in its prompt answers the same as without them" in out
    assert "The memory does not help here." in out
