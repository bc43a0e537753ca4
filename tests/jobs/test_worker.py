"""A real ``ftf worker`` subprocess over the embedded broker and over the real Redis: a training job
whose process is killed with SIGKILL runs again and resumes from its checkpoint (one run folder, one
result); a running job is cancelled."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import QUICKSTART

from finetuneflow import allocator, api, jobs, paths
from finetuneflow.config import to_dict
from finetuneflow.ingest.config import IngestConfig
from finetuneflow.state import jobs as log
from finetuneflow.state import runs as rf
from finetuneflow.train.config import TrainConfig
from jobs.helpers import wait_for


def _project(tiny_model: Path) -> str:
    api.ingest([QUICKSTART / "data"], "w", IngestConfig(tokenizer=str(tiny_model)))
    api.build_dataset("w")
    return "w"


def _train_args(tiny_model: Path, steps: int) -> dict[str, Any]:
    # the style goal: a fixed number of steps (the knowledge goal's recall probe may stop a random
    # tiny model early, and these tests count steps across a kill)
    cfg = TrainConfig(
        base_model=str(tiny_model), goal="style", max_len=64, max_steps=steps, precision="fp32", threads=1
    )
    cfg.checkpoints.every = 2
    return {"dataset": "default", "config": to_dict(cfg)}


def _started(job_id: int) -> list[dict[str, Any]]:
    return [e["payload"] for e in log.events(job_id) if e["kind"] == "started"]


def _done(job_id: int) -> bool:
    return log.get(job_id)["status"] in log.DONE


def _train_until_a_checkpoint(project: str, tiny_model: Path, proc: Any, tmp_path: Path) -> tuple[int, Path]:
    """Queue a 40-step training job and wait until the worker ``proc`` wrote its first checkpoint;
    returns the job id and its run folder."""
    job_id = jobs.submit("train", project, _train_args(tiny_model, steps=40))
    run_dir = paths.project_dir(project) / "runs" / log.get(job_id)["params"]["args"]["run_id"]
    log_file = tmp_path / "worker-0.log"
    # step-* only: a checkpoint is written as checkpoints/.partial-* and renamed when whole, and a
    # kill before the rename rightly starts the run over (this waited for the partial one, and on a
    # loaded machine the kill landed before the rename)
    wait_for(lambda: list(run_dir.glob("checkpoints/step-*")), 120, "a first checkpoint", proc, log_file)
    return job_id, run_dir


def test_a_training_job_killed_mid_run_resumes_from_its_checkpoint(
    broker: str, worker: Callable[[str], Any], tiny_model: Path, tmp_path: Path
) -> None:
    project = _project(tiny_model)
    proc = worker("train")
    job_id, run_dir = _train_until_a_checkpoint(project, tiny_model, proc, tmp_path)
    assert not _done(job_id), "the run finished before it could be killed: give it more steps"
    os.kill(_started(job_id)[-1]["pid"], signal.SIGKILL)  # the process running the job, mid-training

    wait_for(lambda: _done(job_id), 180, "the job to finish after the kill", proc, tmp_path / "worker-0.log")
    job = log.get(job_id)
    stages = [e["payload"].get("stage") for e in log.events(job_id) if e["kind"] == "progress"]
    assert job["status"] == "finished", job["error"]
    assert len(_started(job_id)) == 2 and job["attempts"] == 2
    assert "resume" in stages  # the second attempt continued from the checkpoint, not from step 0
    assert job["result"]["steps"] == 40 and job["result"]["run_id"] == run_dir.name
    assert [p.name for p in (run_dir.parent).iterdir()] == [run_dir.name]  # one run folder
    assert [e["kind"] for e in log.events(job_id)].count("finished") == 1  # one final result
    assert [r["status"] for r in api.list_runs(project)] == ["finished"]
    # the worker started itself again with jemalloc, and the run folder says what it trained with
    used = rf.read_json(run_dir / rf.CONFIG)["allocator"]
    assert ("jemalloc" in used) if allocator.find_jemalloc() else used == "system"


@pytest.mark.parametrize("broker", ["embedded"], indirect=True)  # the reaper: the same for both
def test_a_job_whose_whole_worker_was_killed_is_requeued_by_the_next_worker(
    broker: str, worker: Callable[[str], Any], tiny_model: Path, tmp_path: Path
) -> None:
    project = _project(tiny_model)
    first = worker("train")
    job_id, run_dir = _train_until_a_checkpoint(project, tiny_model, first, tmp_path)
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool: nobody is left to put the message back
    first.wait()
    assert log.get(job_id)["status"] == "running"  # what a killed process leaves behind

    second = worker("train")  # its reaper finds the job's heartbeat stale (5 s) and queues it again
    wait_for(
        lambda: _done(job_id), 180, "the job to finish on the next worker", second, tmp_path / "worker-1.log"
    )
    job = log.get(job_id)
    kinds = [e["kind"] for e in log.events(job_id)]
    assert job["status"] == "finished", job["error"]
    assert kinds.count("requeued") == 1 and kinds.count("started") == 2 and kinds.count("finished") == 1
    assert job["result"]["steps"] == 40 and [p.name for p in run_dir.parent.iterdir()] == [run_dir.name]


def test_cancel_stops_a_running_job(
    broker: str, worker: Callable[[str], Any], tiny_model: Path, tmp_path: Path
) -> None:
    project = _project(tiny_model)
    proc = worker("train")
    job_id = jobs.submit("train", project, _train_args(tiny_model, steps=100_000))
    wait_for(
        lambda: log.get(job_id)["progress"] > 0, 300, "training to start", proc, tmp_path / "worker-0.log"
    )
    assert jobs.cancel(job_id) == "running"
    wait_for(lambda: _done(job_id), 60, "the job to stop", proc, tmp_path / "worker-0.log")
    assert log.get(job_id)["status"] == "cancelled"
    assert [e["kind"] for e in log.events(job_id)][-1] == "cancelled"
