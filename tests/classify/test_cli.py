"""``ftf classify``: train, resume and predict through the API; ``ftf runs`` lists the runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from .toy import toy_rows, write_csv

# --- CLI -------------------------------------------------------------------------------------------


def test_cli_train_and_predict(tiny_model: Path, tmp_path: Path) -> None:
    from finetuneflow.cli.classify import register

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    data = write_csv(tmp_path / "d.tsv", toy_rows(16), "\t")
    run = tmp_path / "run"
    args = ["classify", "train", str(data), "--model", str(tiny_model), "--out", str(run)]
    args += ["--max-steps", "2", "--epochs", "0", "--threads", "1", "--max-len", "32"]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (
        "accuracy" in result.output and "macro-F1" in result.output and "majority baseline" in result.output
    )
    assert str(run) in result.output.replace("\n", "")
    again = runner.invoke(app, args, catch_exceptions=False)
    assert again.exit_code == 2 and "already holds a finished run" in " ".join(again.output.split())
    texts = ["a printer", "the warranty"]
    result = runner.invoke(app, ["classify", "predict", str(run), *texts, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["text"] for line in lines] == texts
    assert all(line["label"] in ("contract", "hardware") and 0.5 <= line["prob"] <= 1 for line in lines)


def test_cli_module_imports_no_heavy_library() -> None:
    code = (
        "import sys, typer; from finetuneflow.cli.classify import register; app = typer.Typer();"
        "register(app); from typer.testing import CliRunner; CliRunner().invoke(app, ['classify', '--help']);"
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
