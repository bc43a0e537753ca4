"""The example at the top of ``finetuneflow.api`` runs as written.

Only the default model is swapped for the tiny random one (through the resolver registry the
real code uses), so the example's own calls, defaults and paths are what is exercised.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import ROOT

from finetuneflow import api
from finetuneflow.models import resolve


def example_code() -> str:
    """The indented code block after the '::' in the package docstring."""
    doc = api.__doc__ or ""
    block = doc.split("::", 1)[1]
    lines = [line for line in block.splitlines() if line.strip()]
    indent = min(len(line) - len(line.lstrip()) for line in lines)
    return "\n".join(line[indent:] for line in block.splitlines() if line.strip())


def test_the_docstring_has_an_example() -> None:
    code = example_code()
    for step in ("ingest", "build_dataset", "train", "evaluate", "export", "chat"):
        assert re.search(rf"api\.{step}\(", code), step


def test_the_docstring_example_runs(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    default = resolve.DEFAULT_MODEL
    monkeypatch.setattr(
        resolve, "RESOLVERS", [lambda name: tiny_model if name == default else None, *resolve.RESOLVERS]
    )
    monkeypatch.chdir(ROOT)  # the example names examples/quickstart relative to a checkout
    exec(compile(example_code(), "finetuneflow.api docstring", "exec"), {})  # noqa: S102
    # the example reached its last line, print(api.chat(...)); a random model's answer may be empty
    assert capsys.readouterr().out.endswith("\n")
    runs = api.list_runs("demo")
    assert [r["status"] for r in runs] == ["finished"]
    export = Path(os.environ["FTF_HOME"]) / "projects/demo/exports" / runs[0]["id"]
    assert (export / "adapter/adapter_config.json").is_file()
    assert (export / "report.md").is_file()
