"""A run's row: made before its step starts, made again when that start died before training."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from finetuneflow.api._common import forget_unstarted_run, record_run
from finetuneflow.state import runs as rf
from finetuneflow.state import schema, session_scope
from finetuneflow.state.repo import get_or_create_project


def _project() -> int:
    with session_scope() as s:
        return get_or_create_project(s, f"rr-{uuid.uuid4().hex[:8]}").id


def test_a_run_killed_before_training_began_is_recorded_again(tmp_path: Path) -> None:
    # a worker killed while the model loaded left the row; its job's next attempt called
    # api.train again and failed for good on the runs table's unique id
    pid, folder = _project(), tmp_path / "runs" / "r1"
    record_run(pid, "r1", folder, rf.CAUSAL, "default", "old-model", {"lr": 1})
    with pytest.raises(ValueError, match="run id 'r1' is taken"):  # a second start while it loads
        record_run(pid, "r1", folder, rf.CAUSAL, "default", "new-model", {"lr": 2})
    forget_unstarted_run("r1", folder)  # what the job's next attempt does (its claim is exclusive)
    record_run(pid, "r1", folder, rf.CAUSAL, "default", "new-model", {"lr": 2})
    with session_scope() as s:
        run = s.get(schema.Run, "r1")
        assert run is not None and (run.status, run.base_model, run.config) == (
            "running",
            "new-model",
            {"lr": 2},
        )


def test_a_run_id_that_began_training_or_is_taken_is_refused(tmp_path: Path) -> None:
    pid, folder = _project(), tmp_path / "runs" / "r2"
    record_run(pid, "r2", folder, rf.CAUSAL, "default", "m", {})
    with pytest.raises(ValueError, match="run id 'r2' is taken"):
        record_run(_project(), "r2", folder, rf.CAUSAL, "default", "m", {})
    folder.mkdir(parents=True)
    (folder / rf.CONFIG).write_text("{}")
    forget_unstarted_run("r2", folder)  # it began training: kept
    with pytest.raises(ValueError, match="run id 'r2' is taken.*resume"):
        record_run(pid, "r2", folder, rf.CAUSAL, "default", "m", {})
