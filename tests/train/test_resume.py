"""Checkpoints and resume: a run killed with SIGKILL at any moment continues to the same result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetuneflow.config import to_dict
from finetuneflow.errors import TrainingError
from finetuneflow.state import runs as rf
from finetuneflow.train import checkpoint as ckpt
from finetuneflow.train.config import CheckpointSettings, TrainConfig
from finetuneflow.train.step import train

from .helpers import chat_dataset

CHILD = """
import json, sys, time
from finetuneflow.config import from_dict
from finetuneflow.train.config import TrainConfig
from finetuneflow.train.step import train
ds, run, cfg = sys.argv[1], sys.argv[2], from_dict(TrainConfig, json.loads(sys.argv[3]))
# a slow observer, so that the parent's SIGKILL lands in the middle of the run
train(__import__("pathlib").Path(ds), __import__("pathlib").Path(run), cfg, lambda e: time.sleep(0.03))
"""


def _cfg(tiny_model: Path, **kw: object) -> TrainConfig:
    base = dict(
        base_model=str(tiny_model), max_len=64, batch_size=2, grad_accum=2, max_steps=24, epochs=10,
        learning_rate=5e-3, precision="fp32", threads=1, eval_every=4,
        checkpoints=CheckpointSettings(every=3, keep_last=2),
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _kill_when(run_dir: Path, ds: Path, cfg: TrainConfig, step: int) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    args = [sys.executable, "-c", CHILD, str(ds), str(run_dir), json.dumps(to_dict(cfg))]
    child = subprocess.Popen(args, env=env)
    wanted = run_dir / ckpt.CHECKPOINTS / f"step-{step:06d}"
    deadline = time.time() + 120
    while not wanted.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (run_dir / rf.SUMMARY).exists()


@pytest.mark.parametrize(
    "split",
    [
        {},
        {"batch_size": 0, "grad_accum": 4, "threads": 2},
    ],  # the same 4-row step; auto: two 2-row halves side by side
    ids=["one-at-a-time", "side-by-side"],
)
def test_killed_run_resumes_to_the_same_final_loss(
    tiny_model: Path, tmp_path: Path, split: dict[str, int]
) -> None:
    ds = chat_dataset(tmp_path / "ds")
    cfg = _cfg(tiny_model, **split)
    whole = train(ds, tmp_path / "whole", cfg)
    run_dir = tmp_path / "killed"
    _kill_when(run_dir, ds, cfg, step=9)
    done = ckpt.latest(run_dir)
    assert done is not None and int(done.name.split("-")[1]) >= 9
    resumed = train(ds, run_dir, cfg, resume=True)
    assert rf.read_json(run_dir / rf.CONFIG)["side_by_side"] == (2 if split else 1)
    assert resumed["steps"] == whole["steps"] == 24
    assert resumed["final_loss"] == pytest.approx(whole["final_loss"], rel=1e-4)
    assert resumed["eval_loss"] == pytest.approx(whole["eval_loss"], rel=1e-4)
    steps = [m["step"] for m in rf.read_metrics(run_dir) if "loss" in m]
    assert steps == list(range(1, 25))  # replayed steps are logged once
    assert len(ckpt.checkpoint_dirs(run_dir)) <= cfg.checkpoints.keep_last + 1  # + the best


def test_killed_knowledge_run_resumes_to_the_same_result(tiny_model: Path, tmp_path: Path) -> None:
    """The knowledge goal's recall probe and forgetting guard resume too. Both stopping rules are
    off (patience 0, no guard: a random tiny model's recall would stop it at a step that depends on
    noise), so the run lasts its 24 steps and probes every 4; the killed and resumed run must probe
    the same answers, keep the same best step and end on the same weights as an uninterrupted one."""
    from safetensors.torch import load_file

    from finetuneflow.train.config import RecallSettings

    ds = chat_dataset(tmp_path / "ds")
    probe = RecallSettings(every=4, questions=4, max_new_tokens=4, patience=0, max_forgetting=0.0)
    cfg = _cfg(tiny_model, goal="knowledge", recall=probe)
    whole = train(ds, tmp_path / "whole", cfg)
    assert whole["recipe"]["goal"] == "knowledge" and whole["steps"] == 24 and whole["status"] == "finished"
    run_dir = tmp_path / "killed"
    _kill_when(run_dir, ds, cfg, step=9)
    resumed = train(ds, run_dir, cfg, resume=True)
    for key in ("steps", "best_step", "recall_f1", "stop_reason", "status"):
        assert resumed[key] == whole[key], key
    assert resumed["final_loss"] == pytest.approx(whole["final_loss"], rel=1e-4)

    def probes(folder: Path) -> list[tuple[int, float]]:
        return [(m["step"], m["recall_f1"]) for m in rf.read_metrics(folder) if "recall_f1" in m]

    assert [s for s, _ in probes(run_dir)] == list(range(0, 25, 4))  # each probe logged once
    assert probes(run_dir) == probes(tmp_path / "whole")
    best = max(f1 for step, f1 in probes(run_dir) if step > 0)
    assert whole["best_step"] == min(step for step, f1 in probes(run_dir) if step > 0 and f1 == best)
    weights = [
        load_file(str(d / rf.ADAPTER / "adapter_model.safetensors")) for d in (run_dir, tmp_path / "whole")
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch_close(weights[0][k], weights[1][k]) for k in weights[0])


def torch_close(a: object, b: object) -> bool:
    import torch

    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-6))  # type: ignore[arg-type]


def test_resume_ignores_a_half_written_checkpoint(tiny_model: Path, tmp_path: Path) -> None:
    ds = chat_dataset(tmp_path / "ds")
    cfg = _cfg(tiny_model, max_steps=6)
    run_dir = tmp_path / "run"
    _kill_when(run_dir, ds, cfg, step=3)
    junk = run_dir / ckpt.CHECKPOINTS / ".partial-step-000006-999999"
    junk.mkdir()
    (junk / ckpt.WEIGHTS).write_bytes(b"torn")
    assert [d.name for d in ckpt.checkpoint_dirs(run_dir)][-1] in ("step-000003", "step-000004")
    summary = train(ds, run_dir, cfg, resume=True)
    assert summary["steps"] == 6 and not junk.exists()


def test_resume_refuses_changed_settings_and_finished_runs(tiny_model: Path, tmp_path: Path) -> None:
    ds = chat_dataset(tmp_path / "ds")
    cfg = _cfg(tiny_model, max_steps=3)
    train(ds, tmp_path / "run", cfg)
    with pytest.raises(TrainingError, match="already holds a finished run"):
        train(ds, tmp_path / "run", cfg, resume=True)
    (tmp_path / "run" / rf.SUMMARY).unlink()
    with pytest.raises(TrainingError, match=r"other settings \(changed: learning_rate\)"):
        train(ds, tmp_path / "run", _cfg(tiny_model, max_steps=3, learning_rate=1e-3), resume=True)


def test_early_stopping_keeps_the_best_weights(tiny_model: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    ds = chat_dataset(tmp_path / "ds")
    # min_delta so large that no eval after the first counts as better: stop after `patience` evals
    stops = CheckpointSettings(every=0, keep_last=1, patience=2, min_delta=100.0)
    summary = train(ds, tmp_path / "run", _cfg(tiny_model, eval_every=1, checkpoints=stops))
    assert summary["status"] == "early_stopped" and summary["steps"] == 3
    assert summary["best_step"] == 1 and summary["eval_loss"] == summary["best_eval_loss"]
    best = load_file(str(tmp_path / "run" / ckpt.CHECKPOINTS / "step-000001" / ckpt.WEIGHTS))
    saved = load_file(str(tmp_path / "run" / rf.ADAPTER / "adapter_model.safetensors"))
    lora_b = [k for k in best if "lora_B" in k]
    assert lora_b and all((saved[k.replace(".default", "")] == best[k]).all() for k in lora_b)
    last = load_file(str(tmp_path / "run" / ckpt.CHECKPOINTS / "step-000003" / ckpt.WEIGHTS))
    assert any((last[k] != best[k]).any() for k in lora_b)  # step 3 had moved on: step 1's were kept
