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
from finetuneflow.train import run_files as rf
from finetuneflow.train.config import TrainConfig
from finetuneflow.train.distributed import Dist, my_rows
from finetuneflow.train.step import train

from .helpers import chat_dataset

WORKER = Path(__file__).with_name("ddp_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        learning_rate=5e-3, precision="fp32", threads=1, eval_every=2,
    )  # fmt: skip
    single = train(ds, tmp_path / "single", cfg)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    args = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}", str(WORKER), str(ds), str(tmp_path / "ddp"),
        json.dumps(to_dict(cfg)),
    ]  # fmt: skip
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
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
