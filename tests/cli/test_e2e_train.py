"""`ftf train` beyond the default: full fine-tuning through evaluate/export/chat, and --resume."""

import json
import shutil
from pathlib import Path

from conftest import QUICKSTART
from typer.testing import CliRunner

from finetuneflow.cli import app

runner = CliRunner()


def ftf(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _project(model: str, name: str) -> None:
    ftf("ingest", str(QUICKSTART / "data"), "-p", name, "--model", model, "--max-tokens", "128")
    ftf("dataset", "build", "-p", name)


def test_full_fine_tuning_through_the_whole_pipeline(tiny_model: Path, ftf_home: Path) -> None:
    model = str(tiny_model)
    _project(model, "full")
    out = ftf("train", "-p", "full", "--model", model, "--method", "full", "--max-steps", "6",
              "--lr", "1e-3", "--max-len", "256")  # fmt: skip
    run_id = out.split("run ")[1].split(":")[0].strip()
    run = ftf_home / "projects/full/runs" / run_id
    assert (run / "model/model.safetensors").is_file() and not (run / "adapter").exists()
    ftf("evaluate", "-p", "full", "--answers", "1")
    chat = json.loads((run / "evaluation.json").read_text())["losses"]["chat"]
    assert chat["tuned_loss"] < chat["base_loss"]  # base loaded beside the tuned model, not the same one
    result = runner.invoke(app, ["export", "-p", "full", "--format", "adapter"])
    assert result.exit_code == 2 and "has no adapter; export" in " ".join(result.output.split())
    ftf("export", "-p", "full", "--format", "merged", "--format", "report")
    assert (ftf_home / "projects/full/exports" / run_id / "merged/model.safetensors").is_file()
    ftf("chat", "-p", "full", "What does E21 mean?", "--max-new-tokens", "4")


def test_resume_continues_an_interrupted_run(tiny_model: Path, ftf_home: Path) -> None:
    model = str(tiny_model)
    _project(model, "res")
    # the style goal runs all 6 steps (the knowledge goal's recall probe may stop a random model early)
    out = ftf("train", "-p", "res", "--model", model, "--goal", "style", "--max-steps", "6",
              "--save-every", "2", "--max-len", "256", "--threads", "1")  # fmt: skip
    run_id = out.split("run ")[1].split(":")[0].strip()
    run = ftf_home / "projects/res/runs" / run_id
    finished = json.loads((run / "summary.json").read_text())
    # make it look interrupted after step 4: no result, no newer checkpoint
    (run / "summary.json").unlink()
    shutil.rmtree(run / "adapter")
    shutil.rmtree(run / "checkpoints" / "step-000006")
    out = ftf("train", "-p", "res", "--resume", run_id)
    assert f"run {run_id}: 6 steps (finished)" in out
    resumed = json.loads((run / "summary.json").read_text())
    assert abs(resumed["final_loss"] - finished["final_loss"]) < 1e-4 * abs(finished["final_loss"])
    assert run_id in ftf("runs", "-p", "res")
