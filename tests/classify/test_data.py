"""Classification data and scores: CSV parsing, the stratified split, metrics, the config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from finetuneflow.classify.config import ClassifyConfig
from finetuneflow.classify.data import Example, label_names, read_labelled_csv, stratified_split
from finetuneflow.classify.metrics import (
    classification_metrics,
    confusion_matrix,
    majority_baseline,
)
from finetuneflow.classify.step import train as train_classifier
from finetuneflow.config import from_dict
from finetuneflow.errors import ClassifyDataError, ConfigError

from .toy import toy_config, toy_rows, write_csv

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
