"""Fully sharded data parallelism: two CPU processes (gloo) with every weight sharded reach the
weights one process reaches, save checkpoints any process count can resume, and save a plain
adapter (or model)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from finetuneflow.config import to_dict
from finetuneflow.errors import TrainingError
from finetuneflow.state import runs as rf
from finetuneflow.train import checkpoint as ckpt
from finetuneflow.train import fsdp
from finetuneflow.train.config import CheckpointSettings, TrainConfig
from finetuneflow.train.distributed import Dist
from finetuneflow.train.step import train, use_fsdp

from .helpers import chat_dataset
from .test_distributed import CPU_ONLY, WORKER, _free_port


def _torchrun(ds: Path, run_dir: Path, cfg: TrainConfig, *extra: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", **CPU_ONLY}
    args = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}", str(WORKER), str(ds), str(run_dir), json.dumps(to_dict(cfg)), *extra,
    ]  # fmt: skip
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _cfg(tiny_model: Path, **kw: object) -> TrainConfig:
    # 3 rows per step in micro-batches of 1 over 2 ranks: rank 1 runs a weight-0 padding
    # micro-batch each step, and the one eval row leaves rank 1 none (it runs a filler)
    base = dict(
        base_model=str(tiny_model), max_len=64, batch_size=1, grad_accum=3, max_steps=4, epochs=10,
        learning_rate=5e-3, precision="fp32", threads=1, eval_every=2, parallel="fsdp", device="cpu",
        checkpoints=CheckpointSettings(every=2, keep_last=3),
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _weights(run_dir: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    adapter = run_dir / rf.ADAPTER / "adapter_model.safetensors"
    return load_file(str(adapter if adapter.exists() else run_dir / rf.FULL_MODEL / "model.safetensors"))


def _same(a: dict[str, object], b: dict[str, object], atol: float = 1e-4) -> bool:
    return sorted(a) == sorted(b) and all(float((a[k] - b[k]).abs().max()) < atol for k in a)  # type: ignore[operator]


# fp16 runs with FSDP's grad scaler (ranks agree on overflow); its rounding, amplified by AdamW's
# normalisation, moves weights by ~1e-3 between one process and two, so it gets a looser bound.
@pytest.mark.parametrize(("method", "precision", "atol"), [("lora", "fp32", 1e-4), ("full", "fp32", 1e-4),
                                                          ("lora", "fp16", 5e-3)])  # fmt: skip
def test_sharded_two_processes_match_one(
    tiny_model: Path, tmp_path: Path, method: str, precision: str, atol: float
) -> None:
    ds = chat_dataset(tmp_path / "ds", n=16)
    cfg = _cfg(tiny_model, method=method, precision=precision)
    single = train(ds, tmp_path / "single", cfg)  # one process: parallel='fsdp' shards nothing
    _torchrun(ds, tmp_path / "fsdp", cfg)
    sharded = rf.read_json(tmp_path / "fsdp" / rf.SUMMARY)
    assert rf.read_json(tmp_path / "fsdp" / rf.CONFIG)["parallel"] == "fsdp"
    assert rf.read_json(tmp_path / "single" / rf.CONFIG)["parallel"] == "none"
    assert sharded["steps"] == single["steps"] == 4
    assert sharded["real_tokens"] == single["real_tokens"]
    assert sharded["final_loss"] == pytest.approx(single["final_loss"], rel=1e-4)
    assert sharded["eval_loss"] == pytest.approx(single["eval_loss"], rel=1e-4)
    assert _same(_weights(tmp_path / "single"), _weights(tmp_path / "fsdp"), atol)


def test_sharded_checkpoints_resume_sharded_or_in_one_process(tiny_model: Path, tmp_path: Path) -> None:
    ds = chat_dataset(tmp_path / "ds", n=16)
    cfg = _cfg(tiny_model)
    _torchrun(ds, tmp_path / "whole", cfg)
    whole = rf.read_json(tmp_path / "whole" / rf.SUMMARY)
    for name in ("sharded", "one"):  # as if killed right after the step-2 checkpoint
        shutil.copytree(tmp_path / "whole", tmp_path / name)
        (tmp_path / name / rf.SUMMARY).unlink()
        shutil.rmtree(tmp_path / name / rf.ADAPTER)
        shutil.rmtree(tmp_path / name / ckpt.CHECKPOINTS / "step-000004")
    _torchrun(ds, tmp_path / "sharded", cfg, "resume")
    one = train(ds, tmp_path / "one", cfg, resume=True)
    for resumed in (rf.read_json(tmp_path / "sharded" / rf.SUMMARY), one):
        assert resumed["steps"] == 4 and resumed["real_tokens"] == whole["real_tokens"]
        assert resumed["final_loss"] == pytest.approx(whole["final_loss"], rel=1e-4)
    assert _same(_weights(tmp_path / "whole"), _weights(tmp_path / "sharded"))
    assert _same(_weights(tmp_path / "whole"), _weights(tmp_path / "one"))


def test_accelerate_launch_use_fsdp_shards_with_the_default_config(tiny_model: Path, tmp_path: Path) -> None:
    ds = chat_dataset(tmp_path / "ds", n=16)
    cfg = _cfg(tiny_model, parallel="auto")
    single = train(ds, tmp_path / "single", cfg)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", **CPU_ONLY}
    accelerate = Path(sys.executable).with_name("accelerate")
    args = [
        str(accelerate), "launch", "--num_processes=2", "--num_machines=1", "--use_fsdp",
        f"--main_process_port={_free_port()}", str(WORKER), str(ds), str(tmp_path / "acc"),
        json.dumps(to_dict(cfg)),
    ]  # fmt: skip
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert rf.read_json(tmp_path / "acc" / rf.CONFIG)["parallel"] == "fsdp"
    sharded = rf.read_json(tmp_path / "acc" / rf.SUMMARY)
    assert sharded["final_loss"] == pytest.approx(single["final_loss"], rel=1e-4)


def test_every_rank_runs_as_many_micro_batches() -> None:
    rows = list(range(5))  # 5 rows over 2 ranks in micro-batches of 2: shares of 3 and 2
    count = fsdp.microbatch_count(len(rows), 2, 2)
    shares = [fsdp.even_microbatches(rows[r::2], 2, count, rows[0]) for r in range(2)]  # type: ignore[arg-type]
    assert [len(s) for s in shares] == [2, 2]
    assert [[(part, w) for part, w in s] for s in shares] == [
        [([0, 2], 1.0), ([4], 1.0)],
        [([1, 3], 1.0), ([1, 3], 0.0)],  # the padding repeats a real micro-batch, weighted 0
    ]
    lone = fsdp.even_microbatches([], 2, 1, "filler")  # type: ignore[arg-type]
    assert lone == [(["filler"], 0.0)]


def test_fsdp_is_chosen_only_with_several_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    two = Dist(0, 2, 0)
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert use_fsdp(TrainConfig(parallel="fsdp"), two)
    assert not use_fsdp(TrainConfig(parallel="fsdp"), Dist())
    assert not use_fsdp(TrainConfig(), two)  # auto: plain data parallelism
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch --use_fsdp` sets
    assert use_fsdp(TrainConfig(), two)
    assert not use_fsdp(TrainConfig(parallel="ddp"), two)


def test_qlora_cannot_be_sharded() -> None:
    pytest.importorskip("bitsandbytes", reason="QLoRA is only chosen where bitsandbytes is installed")
    from finetuneflow.train.step import _check_fsdp

    qlora = TrainConfig(method="qlora")
    with pytest.raises(TrainingError, match="parallel='ddp'"):
        _check_fsdp(qlora, "cuda:0", sharded=True)  # decided before any weight is loaded
    _check_fsdp(qlora, "cuda:0", sharded=False)
    _check_fsdp(qlora, "cpu", sharded=True)  # on a CPU QLoRA falls back to LoRA, which shards


def test_a_sharded_run_out_of_memory_stops_with_what_to_change() -> None:
    import types

    import torch

    from finetuneflow.train.loop import _back_off

    weight = torch.nn.Parameter(torch.zeros(2))
    loop = types.SimpleNamespace(opt=torch.optim.SGD([weight]), sharded=True, cfg=TrainConfig())
    state = ckpt.LoopState(micro_size=4)  # a plain run would halve this and go on
    err = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    with pytest.raises(TrainingError, match="parallel='fsdp'.*cannot shrink.*ftf plan"):
        _back_off(loop, state, 0, err, None)  # type: ignore[arg-type]
    assert state.micro_size == 4 and state.ooms == []
