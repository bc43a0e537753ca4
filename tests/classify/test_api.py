"""Classification through the API: run records in the DB, ``list_runs``, resume, predict, and the
guards between the two kinds of run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from finetuneflow import api
from finetuneflow.classify.config import ClassifyCheckpoints, ClassifyConfig
from finetuneflow.errors import ClassifyDataError, ConfigError, FinishedRunError
from finetuneflow.state import Job, Run, session_scope
from finetuneflow.state import runs as rf

from .toy import toy_config, toy_rows, write_csv


class Stop(Exception):
    """Raised from the event sink: the run stops the way a crash or Ctrl-C would stop it."""


def stop_at(step: int) -> Any:
    def sink(event: Any) -> None:
        if event.stage == "step" and event.done == step:
            raise Stop

    return sink


def test_a_run_is_recorded_listed_and_used_for_predictions(tiny_model: Path, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "tickets.csv", toy_rows(40))
    summary = api.train_classifier("p", data, toy_config(tiny_model, max_steps=6))
    run_id = summary["run_id"]
    folder = api.run_dir("p", run_id)
    assert folder.parent.name == "runs" and (folder / rf.SUMMARY).is_file()
    assert rf.run_kind(folder) == rf.CLASSIFY
    [row] = api.list_runs("p")
    assert row["id"] == run_id and row["kind"] == "classify" and row["status"] == "finished"
    assert row["dataset"] == "tickets.csv" and row["base_model"] == str(tiny_model)
    assert row["accuracy"] == summary["eval"]["accuracy"] and row["macro_f1"] == summary["eval"]["macro_f1"]
    assert row["eval_loss"] is None
    with session_scope() as s:
        run = s.get(Run, run_id)
        assert run is not None and run.config["max_steps"] == 6 and run.summary["steps"] == 6
        assert run.finished_at is not None
        assert [(j.step, j.status) for j in s.scalars(select(Job))] == [("classify", "finished")]
    assert api.latest_run("p", kind="classify") == api.latest_run("p", kind=None) == run_id
    with pytest.raises(LookupError, match="no finished run; run `ftf train` first"):
        api.latest_run("p")  # a classifier is not what chat or evaluate can use
    got = api.predict("p", ["the printer is open", "the warranty is two years"])
    assert [g["text"] for g in got] == ["the printer is open", "the warranty is two years"]
    assert all(g["label"] in ("contract", "hardware") and 0.5 <= g["prob"] <= 1 for g in got)
    [alone] = api.predict("p", ["the printer is open"], run_id)  # alone, not padded beside a longer one
    assert alone["label"] == got[0]["label"] and alone["prob"] == pytest.approx(got[0]["prob"], rel=1e-5)


def test_the_kinds_do_not_mix(tiny_model: Path, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "d.csv", toy_rows(16))
    run_id = api.train_classifier("p", data, toy_config(tiny_model, max_steps=2))["run_id"]
    with pytest.raises(LookupError, match="is a classify run, for `ftf classify predict`"):
        api.evaluate("p", run_id)
    with pytest.raises(LookupError, match="is a classify run"):
        api.chat("p", "hello", run_id)
    with pytest.raises(LookupError, match="classification run; resume it with `ftf classify train --resume"):
        api.resume("p", run_id)


def test_bad_settings_or_files_are_refused_before_anything_is_recorded(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "d.csv", toy_rows(16))
    with pytest.raises(ConfigError, match="batch_size"):
        api.train_classifier("p", data, ClassifyConfig(batch_size=0))
    with pytest.raises(ClassifyDataError, match="no labelled file at"):
        api.train_classifier("p", tmp_path / "missing.csv")
    with session_scope() as s:
        assert s.scalars(select(Run)).all() == [] and s.scalars(select(Job)).all() == []


def test_an_interrupted_run_is_failed_until_resumed(tiny_model: Path, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "d.csv", toy_rows(40))
    cfg = toy_config(tiny_model, max_steps=8, checkpoints=ClassifyCheckpoints(every=3))
    whole = api.train_classifier("p", data, cfg)
    with pytest.raises(Stop):
        api.train_classifier("p", data, cfg, stop_at(5))
    cut = next(r for r in api.list_runs("p") if r["id"] != whole["run_id"])
    assert cut["status"] == "failed" and cut["kind"] == "classify" and cut["accuracy"] is None
    events: list[Any] = []
    resumed = api.resume_classifier("p", cut["id"], events.append)
    assert any(e.stage == "resume" and "from step 3" in e.message for e in events)
    assert resumed["run_id"] == cut["id"] and resumed["steps"] == 8
    assert resumed["final_loss"] == pytest.approx(whole["final_loss"], rel=1e-5)
    assert resumed["eval"]["confusion_matrix"] == whole["eval"]["confusion_matrix"]
    assert {r["id"]: r["status"] for r in api.list_runs("p")} == {whole["run_id"]: "finished",
                                                                  cut["id"]: "finished"}  # fmt: skip
    with pytest.raises(FinishedRunError, match="already holds a finished run"):
        api.resume_classifier("p", cut["id"])
    assert {r["status"] for r in api.list_runs("p")} == {"finished"}  # the refusal left the record be
