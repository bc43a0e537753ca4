"""`ftf chat` as a user runs it: one question, or an interactive chat read from stdin (CliRunner's
``input=``) and from a real terminal (a pty)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from finetuneflow import api
from finetuneflow.api import memory_port
from finetuneflow.api.memory_port import NOT_INSTALLED
from finetuneflow.cli import app

runner = CliRunner()


def ftf(*args: str, input: str | None = None) -> str:  # noqa: A002 - CliRunner's name
    result = runner.invoke(app, list(args), input=input, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_one_question_prints_one_answer(chat_project: str) -> None:
    out = ftf("chat", "-p", chat_project, "What is E3?", "--max-new-tokens", "8")
    [row] = api.exchange_log(chat_project)
    assert out == row["answer"] + "\n" and out.startswith("F")


def test_without_a_question_the_chat_reads_lines_until_quit(
    chat_project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory_port, "installed", lambda: False)  # a build without memory
    typed = "What is E3?\n/rate 5\nAnd E4?\n/correct Paper out.\n/teach x\n/quit\nnever asked\n"
    out = ftf("chat", "-p", chat_project, "--max-new-tokens", "8", input=typed)
    first, second = api.exchange_log(chat_project)
    assert first["session"] == second["session"] and second["history"][0]["content"] == "What is E3?"
    assert (first["rating"], second["correction"]) == (5, "Paper out.")
    assert first["answer"] in out and "rated 5/5" in out and NOT_INSTALLED in out
    assert out.count("you> ") == 6  # prompted before each line read, none after /quit


def test_sampling_flags_reach_the_log_and_end_of_input_ends_the_chat(chat_project: str) -> None:
    args = [
        "--temperature",
        "0.7",
        "--top-p",
        "0.9",
        "--seed",
        "3",
        "--max-new-tokens",
        "5",
        "--no-memory",
        "--device",
        "cpu",
    ]
    out = ftf("chat", "-p", chat_project, *args, "--system", "Be brief.", input="What is E3?\n/status\n")
    [row] = api.exchange_log(chat_project)
    assert row["sampling"] == {"max_new_tokens": 5, "temperature": 0.7, "top_p": 0.9, "seed": 3}
    assert row["system"] == "Be brief." and "memory: memory is off" in out


def test_bad_flags_fail_with_the_fix(chat_project: str) -> None:
    result = runner.invoke(app, ["chat", "-p", chat_project, "--top-p", "0", "--temperature", "-1", "hi"])
    assert result.exit_code == 2
    assert "sampling.temperature: must be >= 0" in result.output and "sampling.top_p" in result.output
    result = runner.invoke(app, ["chat", "-p", "nothing-here", "hi"])
    assert result.exit_code == 2 and "--base" in result.output


def test_a_real_terminal_streams_and_prompts(chat_project: str, ftf_home: Path) -> None:
    """The chat in a pty, as a person sees it: a prompt, the answer, the prompt again."""
    env = {**os.environ, "FTF_HOME": str(ftf_home), "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "120"}
    main, child = pty.openpty()
    cmd = [sys.executable, "-m", "finetuneflow.cli", "chat", "-p", chat_project, "--max-new-tokens", "8"]
    proc = subprocess.Popen(cmd, stdin=child, stdout=child, stderr=child, env=env, close_fds=True)
    os.close(child)
    try:
        seen = _read_until(main, "you> ")
        assert "chatting with tiny-run" in seen
        os.write(main, b"What is E3?\n")
        answer = _read_until(main, "you> ")
        os.write(main, b"/quit\n")
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        os.close(main)
    [row] = api.exchange_log(chat_project)
    assert row["answer"] in answer.replace("\r\n", "\n")


def _read_until(fd: int, marker: str, timeout: float = 120) -> str:
    text, end = "", time.monotonic() + timeout
    while marker not in text:
        assert time.monotonic() < end, f"no {marker!r} in {text!r}"
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            text += os.read(fd, 4096).decode(errors="replace")
    return text
