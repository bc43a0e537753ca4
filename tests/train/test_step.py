"""The training step's contract: schedule, determinism, NaN guard, no overwriting finished runs."""

import shutil
from pathlib import Path

import pytest

from finetuneflow.errors import TrainingError
from finetuneflow.models.chat import Row
from finetuneflow.state.datasets import split_path, write_jsonl
from finetuneflow.train.config import TrainConfig
from finetuneflow.train.step import batches, lr_at, plan_steps, train


def tiny_dataset(root: Path) -> Path:
    def chat(i: int) -> dict[str, object]:
        msgs = [
            {"role": "user", "content": f"What is E{i}?"},
            {"role": "assistant", "content": f"Fault {i}."},
        ]
        return {"id": str(i), "source": "t", "messages": msgs}

    write_jsonl(split_path(root, "chat", "train"), [chat(i) for i in range(12)])
    write_jsonl(split_path(root, "chat", "eval"), [chat(99)])
    return root


def test_schedule_warms_up_then_decays_to_ten_percent() -> None:
    lrs = [lr_at(s, 100, 10, 1e-3) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[-1] == pytest.approx(1e-4, rel=0.01)


def test_steps_and_batches_follow_epochs_and_seed() -> None:
    rows = [Row([i], [i], [0], 1, 1) for i in range(10)]
    cfg = TrainConfig(batch_size=2, grad_accum=2, epochs=2)
    assert plan_steps(10, cfg) == 6  # ceil(10 / 4) per epoch
    assert plan_steps(10, TrainConfig(batch_size=2, epochs=2, max_steps=3)) == 3
    plan = batches(rows, cfg, 6)
    assert len(plan) == 6 and all(len(group) == 2 for group in plan)
    first_epoch = [r.input_ids[0] for group in plan[:3] for micro in group for r in micro][:10]
    assert sorted(first_epoch) == list(range(10))  # every row once per epoch
    assert batches(rows, cfg, 6) == plan
    assert batches(rows, TrainConfig(batch_size=2, grad_accum=2, epochs=2, seed=1), 6) != plan


def test_nan_loss_stops_the_run_with_the_step(tiny_model: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "nan-model"
    shutil.copytree(tiny_model, broken)
    weights = load_file(str(broken / "model.safetensors"))
    weights = {k: torch.full_like(v, float("nan")) if "layers.0.mlp" in k else v for k, v in weights.items()}
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    cfg = TrainConfig(base_model=str(broken), max_len=64, epochs=1)
    with pytest.raises(TrainingError, match="loss became nan at step 1"):
        train(tiny_dataset(tmp_path / "ds"), tmp_path / "run", cfg)


def test_a_finished_run_is_never_overwritten(tiny_model: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(base_model=str(tiny_model), max_len=64, max_steps=2, epochs=1)
    ds = tiny_dataset(tmp_path / "ds")
    summary = train(ds, tmp_path / "run", cfg)
    assert summary["steps"] == 2 and summary["eval_loss"] is not None
    with pytest.raises(TrainingError, match="already holds a finished run"):
        train(ds, tmp_path / "run", cfg)


def test_same_seed_same_run(tiny_model: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(base_model=str(tiny_model), max_len=64, max_steps=3, epochs=1, learning_rate=1e-2)
    ds = tiny_dataset(tmp_path / "ds")
    a = train(ds, tmp_path / "a", cfg)
    b = train(ds, tmp_path / "b", cfg)
    assert a["final_loss"] == pytest.approx(b["final_loss"], rel=1e-6)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fused_adamw_trains_the_same_as_the_per_parameter_loop(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str
) -> None:
    """Issue 16's "same results": the fused AdamW kernel (the default) against torch's loop path,
    step by step and in the saved adapter; weight decay on so that every term of the update counts."""
    import torch
    from safetensors.torch import load_file

    from finetuneflow.state.datasets import read_jsonl
    from finetuneflow.train import loop
    from finetuneflow.train.step import build_model

    cfg = TrainConfig(
        base_model=str(tiny_model), max_len=64, max_steps=4, epochs=10, learning_rate=1e-2,
        weight_decay=0.1, precision=precision, threads=1,
    )  # fmt: skip
    ds = tiny_dataset(tmp_path / "ds")
    runs = {}
    for fused in (True, False):
        monkeypatch.setattr(loop, "FUSED_ADAMW", fused)
        built = build_model(tiny_model, cfg, "cpu")
        opt, _, _ = loop.make_optimizer(built.model, cfg, torch.float32, "cpu")
        assert opt.defaults["fused"] is (True if fused else None)  # the switch reaches the optimizer
        runs[fused] = tmp_path / f"run-{fused}"
        train(ds, runs[fused], cfg)
    losses = {k: [m["loss"] for m in read_jsonl(r / "metrics.jsonl") if "loss" in m] for k, r in runs.items()}
    assert len(losses[True]) == 4
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
    fused_ad, plain_ad = (
        load_file(str(runs[k] / "adapter" / "adapter_model.safetensors")) for k in (True, False)
    )
    assert fused_ad.keys() == plain_ad.keys()
    moved = [k for k in fused_ad if "lora_B" in k and fused_ad[k].abs().max() > 1e-3]
    assert moved  # the adapters trained: the comparison below is not between two zero matrices
    for key, tensor in fused_ad.items():
        torch.testing.assert_close(tensor, plain_ad[key], rtol=1e-3, atol=1e-5)
