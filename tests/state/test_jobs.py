from pathlib import Path

import pytest
from conftest import QUICKSTART
from sqlalchemy import select

from finetuneflow import api
from finetuneflow.events import Event
from finetuneflow.ingest.config import IngestConfig
from finetuneflow.state import Job, session_scope


def test_every_step_call_is_recorded_as_a_job(tiny_model: Path) -> None:
    events: list[Event] = []
    api.ingest([QUICKSTART / "data" / "qa.csv"], "j", IngestConfig(tokenizer=str(tiny_model)), events.append)
    with pytest.raises(LookupError):
        api.train("j", dataset="missing")  # fails before a job starts: nothing recorded
    with pytest.raises(ValueError, match="nothing to build"):
        api.ingest([QUICKSTART / "data" / "missing.csv"], "empty", IngestConfig(tokenizer=str(tiny_model)))
        api.build_dataset("empty")
    with session_scope() as s:
        jobs = s.scalars(select(Job).order_by(Job.id)).all()
        done = [(j.step, j.status) for j in jobs]
        failed = jobs[-1].error
        first_result = jobs[0].result
    assert done == [("ingest", "finished"), ("ingest", "finished"), ("dataset", "failed")]
    assert first_result == {"counts": {"ingested": 1}}
    assert failed is not None and "nothing to build" in failed
    assert events[-1].stage == "files" and events[-1].done == events[-1].total == 1
