"""Data parallelism: two CPU processes (gloo) under torchrun reach the weights one process reaches."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from finetuneflow.config import to_dict
from finetuneflow.state import runs as rf
from finetuneflow.train.config import TrainConfig
from finetuneflow.train.distributed import Dist, my_rows
from finetuneflow.train.step import train

from .helpers import chat_dataset

WORKER = Path(__file__).with_name("ddp_worker.py")
# these tests are of the CPU (gloo) path: on a machine with fewer GPUs than ranks, auto would pick CUDA
CPU_ONLY = {"CUDA_VISIBLE_DEVICES": ""}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _two_ranks(ds: Path, run_dir: Path, cfg: TrainConfig) -> subprocess.CompletedProcess[str]:
    """``cfg`` trained on ``ds`` by two gloo ranks under torchrun (ddp_worker.py)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", **CPU_ONLY}
    args = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}", str(WORKER), str(ds), str(run_dir), json.dumps(to_dict(cfg)),
    ]  # fmt: skip
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


def test_rows_are_shared_out_without_overlap() -> None:
    rows = list(range(7))
    shares = [my_rows(rows, Dist(rank, 3, rank)) for rank in range(3)]
    assert sorted(x for share in shares for x in share) == rows
    assert my_rows(rows, Dist()) == rows


def test_two_processes_match_one(tiny_model: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    ds = chat_dataset(tmp_path / "ds", n=16)
    cfg = TrainConfig(
        base_model=str(tiny_model), max_len=64, batch_size=4, max_steps=4, epochs=10,
        learning_rate=5e-3, precision="fp32", threads=1, eval_every=2, device="cpu",
    )  # fmt: skip
    single = train(ds, tmp_path / "single", cfg)
    done = _two_ranks(ds, tmp_path / "ddp", cfg)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = rf.read_json(tmp_path / "ddp" / rf.SUMMARY)
    assert rf.read_json(tmp_path / "ddp" / rf.CONFIG)["world_size"] == 2
    assert ddp["steps"] == single["steps"] == 4
    assert ddp["real_tokens"] == single["real_tokens"]
    assert ddp["final_loss"] == pytest.approx(single["final_loss"], rel=1e-4)
    assert ddp["eval_loss"] == pytest.approx(single["eval_loss"], rel=1e-4)
    a = load_file(str(tmp_path / "single" / rf.ADAPTER / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "ddp" / rf.ADAPTER / "adapter_model.safetensors"))
    assert all((a[k] - b[k]).abs().max() < 1e-4 for k in a)


def test_ftf_train_under_torchrun_records_one_run(tiny_model: Path, ftf_home: Path) -> None:
    from conftest import QUICKSTART
    from typer.testing import CliRunner

    from finetuneflow import api
    from finetuneflow.cli import app

    runner = CliRunner()
    model = ["--model", str(tiny_model), "--max-tokens", "128"]
    for args in (["ingest", str(QUICKSTART / "data"), "-p", "dp", *model], ["dataset", "build", "-p", "dp"]):
        assert runner.invoke(app, args).exit_code == 0
    ftf = Path(sys.executable).with_name("ftf")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", **CPU_ONLY}
    args = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}", str(ftf), "train", "-p", "dp", "--model", str(tiny_model),
        "--max-steps", "3", "--max-len", "128",
    ]  # fmt: skip
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("3 steps (finished)") == 1  # rank 0 speaks, rank 1 trains silently
    runs = api.list_runs("dp")
    assert len(runs) == 1 and runs[0]["status"] == "finished"
    assert rf.read_json(Path(ftf_home) / "projects/dp/runs" / runs[0]["id"] / rf.CONFIG)["world_size"] == 2


def test_more_ranks_than_gpus_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from finetuneflow.errors import TrainingError
    from finetuneflow.train import distributed

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(TrainingError, match=r"2 processes on this machine but 1 GPU\(s\).*nproc_per_node 1"):
        distributed.init("cuda")  # rank 0 too: it would otherwise wait in NCCL for a rank that failed


def test_a_failure_on_rank_0_while_sizing_micro_batches_reaches_every_rank() -> None:
    # rank 0 alone reads the model's sizes; an unexpected error there used to leave rank 1 in the
    # broadcast, to fail later on a closed connection (gloo) or wait out NCCL's timeout
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", **CPU_ONLY}
    args = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}", str(Path(__file__).with_name("split_worker.py")),
    ]  # fmt: skip
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0: TypeError" in done.stdout
    assert "rank 1: TrainingError: rank 0 could not size the micro-batches (TypeError" in done.stdout


def test_self_rehearsal_under_torchrun_trains_what_one_process_trains(
    tiny_model: Path, tmp_path: Path
) -> None:
    from finetuneflow.train import rehearsal
    from finetuneflow.train.config import RecallSettings

    ds = chat_dataset(tmp_path / "ds", n=16)
    cfg = TrainConfig(
        base_model=str(tiny_model), goal="knowledge", max_len=256, batch_size=4, max_steps=2,
        learning_rate=5e-3, precision="fp32", threads=1, device="cpu",
        recall=RecallSettings(every=2, questions=2, max_new_tokens=4, rehearsal=0.25),
    )  # fmt: skip
    single = train(ds, tmp_path / "single", cfg)
    done = _two_ranks(ds, tmp_path / "ddp", cfg)
    assert done.returncode == 0, done.stderr[-3000:]
    # rank 0 generated the answers and every rank packed them: the same rows as one process
    kept = (tmp_path / "ddp" / rehearsal.FILE).read_text()
    assert kept and kept == (tmp_path / "single" / rehearsal.FILE).read_text()
    ddp = rf.read_json(tmp_path / "ddp" / rf.SUMMARY)
    assert ddp["real_tokens"] == single["real_tokens"] and ddp["data"] == single["data"]
    assert single["data"]["train"]["rehearsal_examples"] == 4
