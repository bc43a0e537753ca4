"""Sequence classification: CSV parsing, stratified split, metrics, a learnable toy task, predict, CLI."""

from __future__ import annotations

import csv
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from tiny import CORPUS
from typer.testing import CliRunner

from finetuneflow.config import from_dict
from finetuneflow.errors import ClassifyDataError, ConfigError, TrainingError
from finetuneflow.paths import sha256_file
from finetuneflow.state import runs as rf
from finetuneflow.train.classify import LABELS, PREDICTIONS, ClassifyConfig, predict, train_classifier
from finetuneflow.train.classify_data import Example, label_names, read_labelled_csv, stratified_split
from finetuneflow.train.classify_metrics import (
    classification_metrics,
    confusion_matrix,
    majority_baseline,
)
from finetuneflow.train.config import LoraSettings

KEYWORDS = {"hardware": "printer", "contract": "warranty"}
# filler words from the tiny tokenizer's corpus, without the two words that decide the class
WORDS = sorted(
    {w.lower() for line in CORPUS[:3] for w in re.findall(r"[A-Za-z]+", line)} - {"printer", "warranty"}
)


def write_csv(path: Path, rows: list[list[str]], delimiter: str = ",", encoding: str = "utf-8") -> Path:
    with path.open("w", newline="", encoding=encoding) as fh:
        csv.writer(fh, delimiter=delimiter).writerows(rows)
    return path


def toy_rows(n: int, seed: int = 0) -> list[list[str]]:
    """Texts whose class is one keyword somewhere in the middle: the last token says nothing, so the
    model must carry the keyword forward through attention to the token it classifies from."""
    rng = random.Random(seed)
    rows = [["text", "label"]]
    for i in range(n):
        label = ("hardware", "contract")[i % 2]
        words = rng.sample(WORDS, 6)
        words.insert(rng.randrange(1, 6), KEYWORDS[label])
        rows.append([" ".join(words), label])
    return rows


def toy_config(tiny_model: Path, **over: Any) -> ClassifyConfig:
    base: dict[str, Any] = dict(
        base_model=str(tiny_model),
        max_steps=40,
        epochs=0,
        learning_rate=5e-3,
        batch_size=8,
        lora=LoraSettings(r=8, alpha=16),
        eval_fraction=0.25,
        threads=1,
        max_len=32,
    )
    return ClassifyConfig(**{**base, **over})


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # the box is shared; tiny tensors gain nothing from more


@pytest.fixture(scope="module")
def toy_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("classify")
    data = write_csv(root / "toy.csv", toy_rows(80))
    run = root / "run"
    return data, run, train_classifier(data, run, toy_config(tiny_model))


# --- reading the CSV -------------------------------------------------------------------------------


def test_tsv_is_sniffed_even_when_texts_are_full_of_commas(tmp_path: Path) -> None:
    rows = [["id", "text", "label"], ["1", "a, b, c, d", "x"], ["2", "e, f, g", "y"], ["3", "h,i", "x"]]
    got = read_labelled_csv(write_csv(tmp_path / "d.tsv", rows, "\t"))
    assert got.delimiter == "\t"
    assert [(e.text, e.label, e.row) for e in got.examples] == [
        ("a, b, c, d", "x", 2),
        ("e, f, g", "y", 3),
        ("h,i", "x", 4),
    ]
    assert got.counts() == {"x": 2, "y": 1}


def test_semicolons_cp1252_and_custom_columns(tmp_path: Path) -> None:
    rows = [["Review", "Stars"], ["très bien, café", "good"], ["mauvais", "bad"]]
    path = write_csv(tmp_path / "d.csv", rows, ";", encoding="cp1252")
    got = read_labelled_csv(path, text_column="review", label_column="stars")  # case-insensitive
    assert got.delimiter == ";" and got.encoding == "cp1252"
    assert got.examples[0].text == "très bien, café"


def test_missing_text_or_label_names_every_row(tmp_path: Path) -> None:
    rows = [["text", "label"], ["ok", "a"], ["multi\nline text", "b"], ["no label", " "], ["", "a"], ["", ""]]
    # the quoted newline makes the multi-line row span lines 3-4, so the bad rows are 5 and 6;
    # the fully blank last row is skipped, not reported
    with pytest.raises(ClassifyDataError) as err:
        read_labelled_csv(write_csv(tmp_path / "d.csv", rows))
    message = str(err.value)
    assert "2 rows without text or label" in message
    assert "row 5: label is empty" in message and "row 6: text is empty" in message


def test_a_header_is_required(tmp_path: Path) -> None:
    with pytest.raises(ClassifyDataError, match="first row must be a header naming the columns 'text'"):
        read_labelled_csv(write_csv(tmp_path / "d.csv", [["hello", "a"], ["bye", "b"]]))


def test_binary_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_bytes(b"text,label\n\x00\x01\x02")
    with pytest.raises(ClassifyDataError, match="binary"):
        read_labelled_csv(tmp_path / "d.csv")


def test_one_class_and_one_example_classes_are_refused() -> None:
    same = [Example(f"t{i}", "spam", i + 2) for i in range(5)]
    with pytest.raises(ClassifyDataError, match="at least 2 classes; every row is labelled 'spam'"):
        label_names(same)
    rare = [*same, Example("lonely", "ham", 9)]
    with pytest.raises(ClassifyDataError, match=r"class 'ham' has 1 example \(row 9\)"):
        label_names(rare)
    more = [Example("x", "ham", 10), Example("y", "Ham", 11), Example("z", "Ham", 12)]
    assert label_names([*rare, *more]) == ["Ham", "ham", "spam"]  # by name, case kept


def test_eval_csv_with_an_unknown_label_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "train.csv", toy_rows(8))
    other = write_csv(tmp_path / "eval.csv", [["text", "label"], ["a printer", "hardware"], ["x", "other"]])
    with pytest.raises(ClassifyDataError, match=r"row 3: label 'other'"):
        train_classifier(data, tmp_path / "run", toy_config(tiny_model), eval_csv=other)
    assert not (tmp_path / "run").exists()  # refused before any file was written


# --- split -----------------------------------------------------------------------------------------


def test_stratified_split_is_deterministic_and_keeps_proportions() -> None:
    labels = ["a"] * 30 + ["b"] * 10 + ["c"] * 2
    examples = [Example(f"t{i}", label, i + 2) for i, label in enumerate(labels)]
    train, held = stratified_split(examples, 0.2, seed=7)
    assert stratified_split(examples, 0.2, seed=7) == (train, held)
    assert stratified_split(examples, 0.2, seed=8) != (train, held)
    assert sorted(e.row for e in train + held) == [e.row for e in examples]  # disjoint, complete
    assert [sum(e.label == c for e in held) for c in "abc"] == [6, 2, 1]  # round(n * 0.2), >= 1
    assert {e.label for e in train} == {"a", "b", "c"}  # every class still trained on
    assert [e.row for e in held] == sorted(e.row for e in held)  # file order kept


# --- metrics ---------------------------------------------------------------------------------------


def test_metrics_match_a_hand_computed_confusion_matrix() -> None:
    true, pred = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2]
    assert confusion_matrix(true, pred, 3).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    m = classification_metrics(true, pred, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6, abs=1e-4)
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": 0.6667, "f1": 0.8, "support": 3}
    assert m["per_class"]["b"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_class"]["c"] == {"precision": 0.5, "recall": 1.0, "f1": 0.6667, "support": 1}
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3, abs=1e-4)


def test_a_never_predicted_class_scores_zero_not_nan() -> None:
    m = classification_metrics([0, 1, 1, 1], [1, 1, 1, 1], ["a", "b"])
    assert m["confusion_matrix"] == [[0, 1], [0, 3]]
    assert m["per_class"]["a"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_class"]["b"]["precision"] == 0.75 and m["per_class"]["b"]["recall"] == 1.0
    assert m["macro_f1"] == pytest.approx((0 + 2 * 0.75 / 1.75) / 2, abs=1e-4)
    assert not np.isnan(m["macro_f1"])


def test_majority_baseline_uses_the_training_majority() -> None:
    assert majority_baseline([0, 1, 1, 2], [0, 0, 1, 2]) == {"class_id": 1, "accuracy": 0.25}
    assert majority_baseline([2, 0], [0, 2, 2])["class_id"] == 0  # a tie goes to the lower id


# --- config ----------------------------------------------------------------------------------------


def test_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(ClassifyConfig, {"eval_fraction": 1.5, "batch_size": 0, "label_column": "text"})
    assert len(err.value.errors) == 3
    with pytest.raises(ConfigError, match="lora.rank: unknown key"):
        from_dict(ClassifyConfig, {"lora": {"rank": 8}})
    with pytest.raises(ConfigError, match=r"lora\.r: must be >= 1"):
        from_dict(ClassifyConfig, {"lora": {"r": 0}})


# --- model and training ----------------------------------------------------------------------------


def test_labels_and_pad_id_go_into_the_model_config(tiny_model: Path, tiny_tokenizer: Any) -> None:
    from finetuneflow.train.classify_model import load_classifier, pad_id_of

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
