"""``ftf classify``: train, resume and predict through the API; ``ftf runs`` lists the runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from .toy import toy_rows, write_csv


def test_cli_train_and_predict(tiny_model: Path, ftf_home: Path, tmp_path: Path) -> None:
    from finetuneflow.cli.classify import register

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    data = write_csv(tmp_path / "d.tsv", toy_rows(16), "\t")
    args = ["classify", "train", str(data), "--model", str(tiny_model), "--project", "p"]
    args += ["--max-steps", "2", "--epochs", "0", "--threads", "1", "--max-len", "32"]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (
        "accuracy" in result.output and "macro-F1" in result.output and "majority baseline" in result.output
    )
    run_id = result.output.split("run ")[1].split(":")[0].strip()
    run = ftf_home / "projects" / "p" / "runs" / run_id  # the project's runs/, as every training run
    assert str(run) in result.output.replace("\n", "")
    again = runner.invoke(app, ["classify", "train", "-p", "p", "--resume", run_id], catch_exceptions=False)
    assert again.exit_code == 2 and "already holds a finished run" in " ".join(again.output.split())
    texts = ["a printer", "the warranty"]
    predict = ["classify", "predict", *texts, "--json", "-p", "p"]  # the newest classification run
    result = runner.invoke(app, predict, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["text"] for line in lines] == texts
    assert all(line["label"] in ("contract", "hardware") and 0.5 <= line["prob"] <= 1 for line in lines)
    same = runner.invoke(app, [*predict, "--run", run_id], catch_exceptions=False)
    assert same.output == result.output


def test_resume_and_runs(tiny_model: Path, ftf_home: Path, tmp_path: Path) -> None:
    from finetuneflow.cli import app

    runner = CliRunner()
    data = write_csv(tmp_path / "d.csv", toy_rows(24))
    args = ["classify", "train", str(data), "--model", str(tiny_model), "-p", "p", "--max-steps", "6",
            "--epochs", "0", "--threads", "1", "--max-len", "32", "--save-every", "2"]  # fmt: skip
    out = runner.invoke(app, args, catch_exceptions=False).output
    run_id = out.split("run ")[1].split(":")[0].strip()
    run = ftf_home / "projects" / "p" / "runs" / run_id
    finished = json.loads((run / "summary.json").read_text())
    # make it look interrupted after step 4: no result, no newer checkpoint
    (run / "summary.json").unlink()
    shutil.rmtree(run / "adapter")
    shutil.rmtree(run / "checkpoints" / "step-000006")
    refused = runner.invoke(app, ["classify", "train", "-p", "p", "--resume", run_id, "--lr", "1e-3"])
    assert refused.exit_code == 2 and "drop learning_rate" in " ".join(refused.output.split())
    resumed = runner.invoke(app, ["classify", "train", "-p", "p", "--resume", run_id], catch_exceptions=False)
    assert resumed.exit_code == 0, resumed.output
    again = json.loads((run / "summary.json").read_text())
    assert again["final_loss"] == pytest.approx(finished["final_loss"], rel=1e-5)
    assert again["eval"] == finished["eval"]
    listing = runner.invoke(app, ["runs", "-p", "p"], env={"COLUMNS": "200"}, catch_exceptions=False).output
    assert run_id in listing and "classify" in listing and f"acc {again['eval']['accuracy']:.3f}" in listing


def test_cli_module_imports_no_heavy_library() -> None:
    code = (
        "import sys, typer; from finetuneflow.cli.classify import register; app = typer.Typer();"
        "register(app); from typer.testing import CliRunner; CliRunner().invoke(app, ['classify', '--help']);"
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
