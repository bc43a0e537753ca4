"""The classification step: a learnable toy task, a self-describing run folder, predict, the
NaN guard, and checkpoints that resume to the uninterrupted run's result."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from finetuneflow.classify.data import read_labelled_csv
from finetuneflow.classify.predict import predict
from finetuneflow.classify.step import train as train_classifier
from finetuneflow.errors import TrainingError
from finetuneflow.paths import sha256_file
from finetuneflow.state import runs as rf
from finetuneflow.state.runs import LABELS, PREDICTIONS

from .toy import toy_config, toy_rows, write_csv


@pytest.fixture(scope="module")
def toy_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("classify")
    data = write_csv(root / "toy.csv", toy_rows(80))
    run = root / "run"
    return data, run, train_classifier(data, run, toy_config(tiny_model))


# --- model and training ----------------------------------------------------------------------------


def test_labels_and_pad_id_go_into_the_model_config(tiny_model: Path, tiny_tokenizer: Any) -> None:
    from finetuneflow.models.classifier import load_classifier, pad_id_of

    pad = pad_id_of(tiny_tokenizer)
    model = load_classifier(tiny_model, ["neg", "pos"], pad, "cpu")
    assert model.config.id2label == {0: "neg", 1: "pos"} and model.config.label2id == {"neg": 0, "pos": 1}
    assert model.config.pad_token_id == pad == tiny_tokenizer.eos_token_id


def test_toy_task_is_learned_well_above_the_majority_baseline(toy_run: Any) -> None:
    _, run, summary = toy_run
    result, base = summary["eval"], summary["majority_baseline"]
    assert summary["eval_examples"] == 20 and base["accuracy"] == 0.5  # 10 per class held out
    assert result["accuracy"] >= 0.85 and result["accuracy"] >= base["accuracy"] + 0.3, result
    assert result["macro_f1"] >= 0.85
    assert np.array(result["confusion_matrix"]).sum() == 20
    assert summary["labels"] == ["contract", "hardware"]  # ids sorted by name


def test_run_folder_describes_itself(toy_run: Any) -> None:
    data, run, summary = toy_run
    for name in (rf.CONFIG, rf.MANIFEST, rf.METRICS, rf.SUMMARY, LABELS, PREDICTIONS):
        assert (run / name).is_file(), name
    assert (run / rf.ADAPTER / "adapter_config.json").is_file()
    assert (run / rf.ADAPTER / "tokenizer.json").is_file()
    manifest = rf.read_json(run / rf.MANIFEST)
    assert manifest["files"]["train_csv"]["sha256"] == sha256_file(data)
    assert manifest["data"]["eval"]["per_class"] == {"contract": 10, "hardware": 10}
    assert "torch" in manifest["versions"]
    assert rf.read_json(run / LABELS)["label2id"] == {"contract": 0, "hardware": 1}
    adapter = json.loads((run / rf.ADAPTER / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and "score" in adapter["modules_to_save"]
    metrics = rf.read_metrics(run)
    assert [m["step"] for m in metrics if "loss" in m] == list(range(1, 41))
    assert metrics[-1]["eval_accuracy"] == summary["eval"]["accuracy"]


def test_predict_from_the_folder_gives_the_in_memory_predictions(toy_run: Any) -> None:
    data, run, _ = toy_run
    saved = [json.loads(line) for line in (run / PREDICTIONS).read_text().splitlines()]
    texts = {e.row: e.text for e in read_labelled_csv(data).examples}
    got = predict(run, [texts[p["row"]] for p in saved])
    assert [label for label, _ in got] == [p["predicted"] for p in saved]
    assert [prob for _, prob in got] == pytest.approx([p["prob"] for p in saved], abs=1e-5)
    fresh = ["the printer is open", "the warranty is two years", "hello"]
    batched, alone = predict(run, fresh), predict(run, fresh, batch_size=1)
    assert [label for label, _ in batched] == [label for label, _ in alone]  # padding changes nothing
    assert [prob for _, prob in batched] == pytest.approx([prob for _, prob in alone], abs=1e-5)


def test_a_finished_run_is_never_overwritten(toy_run: Any, tiny_model: Path) -> None:
    data, run, _ = toy_run
    before = (run / rf.SUMMARY).read_bytes()
    with pytest.raises(TrainingError, match="already holds a finished run"):
        train_classifier(data, run, toy_config(tiny_model))
    assert (run / rf.SUMMARY).read_bytes() == before


def test_nan_loss_stops_with_the_step(tiny_model: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "nan-model"
    shutil.copytree(tiny_model, broken)
    weights = load_file(str(broken / "model.safetensors"))
    weights = {k: torch.full_like(v, float("nan")) if "layers.0.mlp" in k else v for k, v in weights.items()}
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    data = write_csv(tmp_path / "d.csv", toy_rows(8))
    with pytest.raises(TrainingError, match="loss became nan at step 1"):
        train_classifier(data, tmp_path / "run", toy_config(broken))
    assert not (tmp_path / "run" / rf.SUMMARY).exists()


# --- checkpoints and resume ------------------------------------------------------------------------


class Stop(Exception):
    """Raised from the event sink: the run stops the way a crash or Ctrl-C would stop it."""


def stop_at(step: int) -> Any:
    def sink(event: Any) -> None:
        if event.stage == "step" and event.done == step:
            raise Stop

    return sink


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tiny_model: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from finetuneflow.classify.config import ClassifyCheckpoints
    from finetuneflow.models.lora import LoraSettings
    from finetuneflow.state import checkpoints as ckpt

    data = write_csv(tmp_path / "toy.csv", toy_rows(40))
    # dropout draws random masks every step: the RNG state must come back with the checkpoint too
    cfg = toy_config(
        tiny_model, max_steps=12, lora=LoraSettings(r=8, alpha=16, dropout=0.1),
        checkpoints=ClassifyCheckpoints(every=4, keep_last=2),
    )  # fmt: skip
    whole = train_classifier(data, tmp_path / "whole", cfg)
    run = tmp_path / "cut"
    with pytest.raises(Stop):
        train_classifier(data, run, cfg, stop_at(10))
    assert [d.name for d in ckpt.checkpoint_dirs(run)] == ["step-000004", "step-000008"]
    assert not (run / rf.SUMMARY).exists() and not (run / rf.ADAPTER).exists()
    resumed = train_classifier(data, run, cfg, resume=True)
    assert resumed["steps"] == whole["steps"] == 12
    assert resumed["final_loss"] == pytest.approx(whole["final_loss"], rel=1e-5)
    assert resumed["eval"]["loss"] == pytest.approx(whole["eval"]["loss"], rel=1e-5)
    assert resumed["eval"]["confusion_matrix"] == whole["eval"]["confusion_matrix"]
    assert [m["step"] for m in rf.read_metrics(run) if "loss" in m] == list(range(1, 13))  # replayed once
    saved = load_file(str(run / rf.ADAPTER / "adapter_model.safetensors"))
    reference = load_file(str(tmp_path / "whole" / rf.ADAPTER / "adapter_model.safetensors"))
    assert saved.keys() == reference.keys() and any("score" in k for k in saved)  # the head is saved
    for name, tensor in reference.items():
        assert np.allclose(saved[name].numpy(), tensor.numpy(), atol=1e-6), name
    assert [d.name for d in ckpt.checkpoint_dirs(run)] == ["step-000008", "step-000012"]


def test_resume_refuses_other_settings_or_changed_files(tiny_model: Path, tmp_path: Path) -> None:
    from finetuneflow.classify.config import ClassifyCheckpoints

    data = write_csv(tmp_path / "toy.csv", toy_rows(16))
    cfg = toy_config(tiny_model, max_steps=4, checkpoints=ClassifyCheckpoints(every=1))
    with pytest.raises(Stop):
        train_classifier(data, tmp_path / "run", cfg, stop_at(2))
    with pytest.raises(TrainingError, match=r"other settings \(changed: learning_rate\)"):
        train_classifier(data, tmp_path / "run", toy_config(tiny_model, max_steps=4, learning_rate=1e-3,
                         checkpoints=ClassifyCheckpoints(every=1)), resume=True)  # fmt: skip
    write_csv(data, toy_rows(16, seed=1))
    with pytest.raises(TrainingError, match=r"labelled file\(s\) changed .* \(train_csv\)"):
        train_classifier(data, tmp_path / "run", cfg, resume=True)


def test_a_fresh_start_in_a_folder_drops_the_old_checkpoints(tiny_model: Path, tmp_path: Path) -> None:
    from finetuneflow.classify.config import ClassifyCheckpoints
    from finetuneflow.state import checkpoints as ckpt

    data = write_csv(tmp_path / "toy.csv", toy_rows(16))
    cfg = toy_config(tiny_model, max_steps=4, checkpoints=ClassifyCheckpoints(every=1, keep_last=4))
    with pytest.raises(Stop):
        train_classifier(data, tmp_path / "run", cfg, stop_at(3))
    assert len(ckpt.checkpoint_dirs(tmp_path / "run")) == 3
    with pytest.raises(Stop):  # not resuming: a later resume must not find the first attempt's steps
        train_classifier(data, tmp_path / "run", cfg, stop_at(1))
    assert [d.name for d in ckpt.checkpoint_dirs(tmp_path / "run")] == ["step-000001"]
    assert [m["step"] for m in rf.read_metrics(tmp_path / "run")] == [1]
