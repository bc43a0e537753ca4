"""The whole pipeline through the `ftf` CLI on the shipped sample data and a tiny random model."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import QUICKSTART
from typer.testing import CliRunner

from finetuneflow.cli import app

runner = CliRunner()


def ftf(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_pipeline_end_to_end(tiny_model: Path, ftf_home: Path, tmp_path: Path) -> None:
    model = str(tiny_model)
    ftf("ingest", str(QUICKSTART / "data"), "-p", "e2e", "--model", model, "--max-tokens", "128")
    ftf("dataset", "build", "-p", "e2e")
    # the style goal: a random tiny model answers nothing right, so the knowledge goal would keep the base
    out = ftf("train", "-p", "e2e", "--model", model, "--goal", "style", "--epochs", "2", "--lr", "3e-3",
              "--max-len", "256")  # fmt: skip
    run_id = out.split("run ")[1].split(":")[0].strip()
    run = ftf_home / "projects/e2e/runs" / run_id
    for name in (
        "config.json",
        "manifest.json",
        "metrics.jsonl",
        "summary.json",
        "adapter/adapter_config.json",
    ):
        assert (run / name).is_file(), name
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert losses[-1] < losses[0]  # a random model must learn something from 2 epochs

    ftf("evaluate", "-p", "e2e", "--answers", "2")
    evaluation = json.loads((run / "evaluation.json").read_text())
    chat = evaluation["losses"]["chat"]
    assert chat["tuned_loss"] < chat["base_loss"]
    ftf("export", "-p", "e2e")
    export = ftf_home / "projects/e2e/exports" / run_id
    report = (export / "report.md").read_text()
    assert "is **lower** than the base model's" in report and (export / "loss.png").stat().st_size > 1000
    assert (export / "merged/model.safetensors").is_file()
    assert "## Dataset" in report and "| format | file | MB | sha256 | verification |" in report
    assert (export / "token_lengths.png").is_file()
    ftf("export", "-p", "e2e", "-f", "adapter", "-f", "report", "-f", "zip")
    with zipfile.ZipFile(export.parent / f"{run_id}.zip") as bundle:
        names = set(bundle.namelist())
        assert bundle.testzip() is None
        assert {f"{run_id}/report.md", f"{run_id}/adapter/adapter_config.json", f"{run_id}/loss.png"} <= names
        assert b"## Exports" in bundle.read(f"{run_id}/report.md")
    ftf("chat", "-p", "e2e", "What does E21 mean?", "--max-new-tokens", "8")
    assert run_id in ftf("runs", "-p", "e2e")

    # the exported adapter loads in a plain PEFT script, with no code of ours
    script = (
        f"from peft import PeftModel; from transformers import AutoModelForCausalLM as M;"
        f"m = PeftModel.from_pretrained(M.from_pretrained({model!r}), {str(export / 'adapter')!r});"
        f"print(type(m).__name__)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "PeftModelForCausalLM", done.stderr


def test_bad_setting_fails_with_the_key(tiny_model: Path) -> None:
    result = runner.invoke(app, ["train", "-p", "x", "--lr", "5", "--batch-size", "-1"])
    assert result.exit_code == 2
    assert "learning_rate" in result.output and "batch_size" in result.output


def test_missing_dataset_is_explained(tiny_model: Path) -> None:
    ftf("ingest", str(QUICKSTART / "data" / "qa.csv"), "-p", "nods", "--model", str(tiny_model))
    result = runner.invoke(app, ["train", "-p", "nods", "--model", str(tiny_model)])
    assert result.exit_code == 2 and "ftf dataset build" in result.output


def test_help_is_fast_because_heavy_libraries_stay_unimported() -> None:
    code = (
        "import sys; from finetuneflow.cli import app; from typer.testing import CliRunner;"
        "CliRunner().invoke(app, ['--help']);"
        "print(sorted(m for m in ('torch', 'transformers', 'sqlalchemy', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_every_runtime_export_is_verified(tiny_model: Path, ftf_home: Path) -> None:
    model = str(tiny_model)
    ftf("ingest", str(QUICKSTART / "data"), "-p", "rt", "--model", model, "--max-tokens", "128")
    ftf("dataset", "build", "-p", "rt")
    out = ftf("train", "-p", "rt", "--model", model, "--max-steps", "3", "--lr", "3e-3", "--max-len", "256")
    run_id = out.split("run ")[1].split(":")[0].strip()
    formats = ["adapter", "merged", "gguf", "gguf-lora", "ollama", "onnx", "report", "zip"]
    out = ftf("export", "-p", "rt", *[x for f in formats for x in ("-f", f)], "--gguf-types", "f32,q8_0")
    export = ftf_home / "projects/rt/exports" / run_id
    results = json.loads((export / "export.json").read_text())
    assert results["gguf"]["files"]["f32"]["verify"]["passed"]
    assert results["gguf"]["files"]["f32"]["verify"]["max_abs_diff"] <= 1e-3
    assert results["gguf"]["files"]["q8_0"]["verify"]["passed"]
    assert (export / "gguf/model-q8_0.gguf").is_file()
    adapters = sorted((export / "gguf").glob("adapter-*.gguf"))
    assert adapters == [export / "gguf/adapter-f16.gguf"]  # the default gguf_lora_type
    assert Path(results["gguf-lora"]["path"]) == adapters[0] and results["gguf-lora"]["verify"]["passed"]
    modelfile = (export / "ollama/Modelfile").read_text()
    assert "FROM " in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile and "TEMPLATE" in modelfile
    report = (export / "report.md").read_text()
    assert "### Ollama Modelfile" in report and "gguf q8_0" in report and "passed" in report
    assert results["onnx"]["verify"]["passed"] and (export / "onnx/model.onnx").is_file()
    with zipfile.ZipFile(export.parent / f"{run_id}.zip") as bundle:
        assert f"{run_id}/gguf/model-q8_0.gguf" in bundle.namelist() and bundle.testzip() is None
    assert "verified" in out
