"""Exporting a classification run: an adapter (LoRA + head + labels) that transformers and PEFT
reload to the run's own predictions, a report of its scores, and a clear no to every other format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from classify.toy import toy_config, toy_rows, write_csv  # tests/ is on sys.path (tests/conftest.py)

from finetuneflow import api
from finetuneflow.errors import ExportError, VerificationError
from finetuneflow.export.step import ExportConfig
from finetuneflow.state import runs as rf


@pytest.fixture
def classify_run(tiny_model: Path, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    import torch

    torch.set_num_threads(1)
    data = write_csv(tmp_path / "tickets.csv", toy_rows(80))
    # fp32: the run's recorded predictions are then the numbers a plain fp32 reload must give
    summary = api.train_classifier("p", data, toy_config(tiny_model, precision="fp32"))
    return summary["run_id"], summary


def _reload_and_predict(adapter: Path, base: Path, texts: list[str]) -> list[str]:
    """What a user does with the folder: transformers + PEFT, nothing of ours."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    labels = json.loads((adapter / "labels.json").read_text())
    names = labels["labels"]
    tok = AutoTokenizer.from_pretrained(str(adapter))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(base), num_labels=len(names), id2label=dict(enumerate(names)), label2id=labels["label2id"],
        pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    model = PeftModel.from_pretrained(model, str(adapter)).eval()
    with torch.no_grad():
        return [names[int(model(**tok(t, return_tensors="pt")).logits.argmax(-1))] for t in texts]


def test_the_exported_adapter_reloads_to_the_runs_predictions(
    classify_run: tuple[str, dict[str, Any]], tiny_model: Path
) -> None:
    from safetensors.torch import load_file

    run_id, summary = classify_run
    result = api.export("p", run_id)  # the defaults for a classification run: adapter and report
    out = Path(result["path"])
    assert set(result) == {"path", "adapter", "report"}
    adapter = out / "adapter"
    for name in ("adapter_config.json", "adapter_model.safetensors", "labels.json", "tokenizer.json"):
        assert (adapter / name).is_file(), name
    assert any(".score." in k for k in load_file(str(adapter / "adapter_model.safetensors")))  # the head
    assert json.loads((adapter / "labels.json").read_text())["labels"] == summary["labels"]
    verify = result["adapter"]["verify"]
    assert verify["passed"] and verify["top1_agreement"] == 1.0 and verify["examples"] == 20
    run = api.run_dir("p", run_id)
    saved = [json.loads(line) for line in (run / rf.PREDICTIONS).read_text().splitlines()]
    got = _reload_and_predict(adapter, tiny_model, [p["text"] for p in saved])
    assert got == [p["predicted"] for p in saved]
    assert json.loads((out / "export.json").read_text()).keys() == {"adapter", "report"}


def test_the_report_gives_accuracy_against_the_baseline_and_per_class_scores(
    classify_run: tuple[str, dict[str, Any]],
) -> None:
    run_id, summary = classify_run
    result = api.export("p", run_id, ExportConfig(formats=["report", "zip"]))
    out = Path(result["path"])
    report = (out / "report.md").read_text()
    ev, base = summary["eval"], summary["majority_baseline"]
    assert f"Accuracy **{ev['accuracy']:.3f}** on 20 eval examples **beats** the majority baseline" in report
    assert f"{base['accuracy']:.3f} (always answering '{base['label']}'" in report
    assert f"macro-F1 **{ev['macro_f1']:.3f}**" in report
    for name, m in ev["per_class"].items():
        assert (
            f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
            in report
        )
    matrix = ev["confusion_matrix"]
    assert "| true \\ predicted | contract | hardware |" in report
    assert f"| contract | {matrix[0][0]} | {matrix[0][1]} |" in report
    for name in ("loss.png", "metrics.json", "config.json"):
        assert (out / name).is_file(), name
    assert Path(result["zip"]["path"]).is_file()


def test_formats_of_language_models_are_refused_naming_the_ones_that_apply(
    classify_run: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    run_id, _ = classify_run
    for formats in (["merged"], ["adapter", "gguf"], ["onnx", "ollama"]):
        with pytest.raises(ExportError, match=r"classification run: it cannot be exported as .*; the "
                           r"formats that apply are adapter, report, zip"):  # fmt: skip
            api.export("p", run_id, ExportConfig(formats=formats), out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_an_adapter_that_lost_its_head_fails_verification(
    classify_run: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from finetuneflow.export.classifier import _verify

    run = api.run_dir("p", classify_run[0])
    broken = tmp_path / "adapter"
    shutil.copytree(run / rf.ADAPTER, broken)
    shutil.copyfile(run / rf.LABELS, broken / rf.LABELS)
    weights = load_file(str(broken / "adapter_model.safetensors"))
    weights = {k: torch.zeros_like(v) if ".score." in k else v for k, v in weights.items()}
    save_file(weights, str(broken / "adapter_model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(VerificationError, match="does not reproduce the run"):
        _verify(run, broken)
