"""The training engine's options: methods, precision, chunked loss, out-of-memory back-off."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from finetuneflow.errors import TrainingError
from finetuneflow.models.chat import IGNORE
from finetuneflow.models.loss import summed_loss
from finetuneflow.state import runs as rf
from finetuneflow.train import loop as loop_module
from finetuneflow.train.config import CheckpointSettings, LoraSettings, TrainConfig
from finetuneflow.train.model_setup import build_model, resolve_method
from finetuneflow.train.step import train

from .helpers import chat_dataset


def _cfg(tiny_model: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        base_model=str(tiny_model), max_len=64, batch_size=4, grad_accum=1, max_steps=3, epochs=10,
        learning_rate=5e-3, precision="fp32", threads=1,
    )  # fmt: skip
    return TrainConfig(**(base | kw))


def test_chunked_head_gives_the_same_loss_and_gradients(tiny_model: Path) -> None:
    from finetuneflow.models.load import load_causal_lm

    model = load_causal_lm(tiny_model)
    torch.manual_seed(0)
    ids = torch.randint(0, 300, (2, 64))
    labels = ids.clone()
    labels[:, :10] = IGNORE
    batch = {"input_ids": ids, "labels": labels, "position_ids": torch.arange(64).repeat(2, 1)}
    results = []
    for chunk in (64, 100_000):  # 108 supervised tokens: two chunks vs one
        model.zero_grad()
        loss, n = summed_loss(model, batch, chunk=chunk)
        loss.backward()
        results.append((float(loss.detach()), n, model.lm_head.weight.grad.clone()))
    (a, na, ga), (b, nb, gb) = results
    assert na == nb == 108 and a == pytest.approx(b, rel=1e-6)
    assert torch.allclose(ga, gb, atol=1e-6)


def test_out_of_memory_halves_the_micro_batch_and_gets_the_same_result(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = chat_dataset(tmp_path / "ds")
    cfg = _cfg(tiny_model)
    plain = train(ds, tmp_path / "plain", cfg)
    real = loop_module.summed_loss

    def small_memory(model: Any, batch: dict[str, Any], chunk: int = 4096) -> Any:
        if batch["input_ids"].shape[0] > 1:  # "only one row fits"
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, batch, chunk)

    monkeypatch.setattr(loop_module, "summed_loss", small_memory)
    events: list[Any] = []
    backed = train(ds, tmp_path / "backed", cfg, events.append)
    assert [o["micro_size"] for o in backed["oom_backoffs"]] == [2, 1]
    assert backed["final_loss"] == pytest.approx(plain["final_loss"], rel=1e-5)
    said = [e.message for e in events if e.stage == "oom"]
    assert said[-1].startswith("out of memory at step 1: continuing with 1 row(s) per micro-batch and 4")
    assert any(m.get("event") == "oom" for m in rf.read_metrics(tmp_path / "backed"))


def test_auto_micro_batch_trains_as_one_row_at_a_time_does_and_says_its_split(
    tiny_model: Path, tmp_path: Path
) -> None:
    ds = chat_dataset(tmp_path / "ds")
    one = train(ds, tmp_path / "one", _cfg(tiny_model, batch_size=1, grad_accum=4))
    two = train(ds, tmp_path / "two", _cfg(tiny_model, batch_size=2, grad_accum=2))
    auto = train(ds, tmp_path / "auto", _cfg(tiny_model, batch_size=0, grad_accum=4))  # fp32 on a CPU: 1 row
    runs = ("one", "two", "auto")
    assert [rf.read_json(tmp_path / r / rf.CONFIG)["micro_batch"] for r in runs] == [1, 2, 1]
    assert rf.read_json(tmp_path / "auto" / rf.CONFIG)["train"]["batch_size"] == 0  # resume compares it
    from finetuneflow import hardware  # the folder says why it computed in the dtype it did

    assert rf.read_json(tmp_path / "auto" / rf.CONFIG)["cpu_bf16_speedup"] == hardware.cpu_bf16_speedup()
    losses = [[m["loss"] for m in rf.read_metrics(tmp_path / r) if "loss" in m] for r in runs]
    assert len(losses[0]) == one["steps"] == two["steps"] == auto["steps"] == 3
    assert losses[1] == pytest.approx(losses[0], rel=1e-4) and losses[2] == pytest.approx(losses[0], rel=1e-4)


def test_micro_batches_side_by_side_train_as_one_after_another(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file

    from finetuneflow.train.side_by_side import SideBySide

    ran: list[int] = []
    real = SideBySide.accumulate
    monkeypatch.setattr(
        SideBySide, "accumulate", lambda self, parts, *a: ran.append(len(parts)) or real(self, parts, *a)
    )
    ds = chat_dataset(tmp_path / "ds")
    side = train(ds, tmp_path / "side", _cfg(tiny_model, batch_size=0, grad_accum=4, threads=2))
    assert ran == [4, 4, 4]  # every step: its four 1-row micro-batches (fp32), two at a time
    seq = train(ds, tmp_path / "seq", _cfg(tiny_model, batch_size=1, grad_accum=4, threads=2))
    assert ran == [4, 4, 4]  # a set batch_size runs one micro-batch at a time
    split = [
        (c["micro_batch"], c["side_by_side"])
        for c in (rf.read_json(tmp_path / r / rf.CONFIG) for r in ("side", "seq"))
    ]
    assert split == [(1, 2), (1, 1)]
    losses = [[m["loss"] for m in rf.read_metrics(tmp_path / r) if "loss" in m] for r in ("side", "seq")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5) and side["steps"] == seq["steps"] == 3
    a, b = (load_file(str(tmp_path / r / rf.ADAPTER / "adapter_model.safetensors")) for r in ("side", "seq"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_beside_a_busy_core_each_way_is_tried_and_the_faster_kept(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beside another process that keeps a core busy (what /proc/stat says with a spinner on one
    core of two), the default tries a step side by side (torch's threads at 1 each) and one one at
    a time, then keeps the faster: which wins depends on the other process (README "Both cores")."""
    from finetuneflow import hardware
    from finetuneflow.train.side_by_side import SideBySide

    ran: list[tuple[int, int]] = []
    real = SideBySide.accumulate

    def counted(self: SideBySide, parts: list[Any], *a: Any) -> float:
        ran.append((len(parts), torch.get_num_threads()))
        return real(self, parts, *a)

    monkeypatch.setattr(SideBySide, "accumulate", counted)
    monkeypatch.setattr(hardware, "available_cores", lambda: 2)
    monkeypatch.setattr(hardware.CoreShare, "others_busy", lambda self: 1.0)
    ds = chat_dataset(tmp_path / "ds")
    busy = train(ds, tmp_path / "busy", _cfg(tiny_model, batch_size=0, grad_accum=4, threads=0))
    ways = [m["side_by_side"] for m in rf.read_metrics(tmp_path / "busy") if "loss" in m]
    assert ways[:2] == [2, 1] and ways[2] in (1, 2) and len(ways) == 3  # tried both, then one kept
    assert ran == [(4, 1)] * ways.count(2)  # side by side: the four parts two at a time, 1 thread each
    seq = train(ds, tmp_path / "seq", _cfg(tiny_model, batch_size=1, grad_accum=4, threads=1))
    losses = [[m["loss"] for m in rf.read_metrics(tmp_path / r) if "loss" in m] for r in ("busy", "seq")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5) and busy["steps"] == seq["steps"] == 3


def test_beside_another_training_of_ours_every_step_runs_one_at_a_time(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the busy core is another of our trainings (registered in train/peers.py), no way is
    tried: each keeping side by side made both slower than one thread each (README "Both cores")."""
    from finetuneflow import hardware
    from finetuneflow.train.peers import Trainings
    from finetuneflow.train.side_by_side import SideBySide

    ran: list[int] = []
    real = SideBySide.accumulate
    monkeypatch.setattr(
        SideBySide, "accumulate", lambda self, parts, *a: ran.append(len(parts)) or real(self, parts, *a)
    )
    monkeypatch.setattr(hardware, "available_cores", lambda: 2)
    busy = iter([0.0])  # at the start the other is still loading; then it holds its core
    monkeypatch.setattr(hardware.CoreShare, "others_busy", lambda self: next(busy, 1.0))
    import threading

    real_loss, where = loop_module.summed_loss, []

    def noted(model: Any, batch: dict[str, Any], chunk: int = 4096) -> Any:
        if model.training:
            where.append(threading.current_thread().name.split("_")[0])
        return real_loss(model, batch, chunk)

    monkeypatch.setattr(loop_module, "summed_loss", noted)
    ds = chat_dataset(tmp_path / "ds")
    with Trainings():  # the other training, in the folder this test's runs look in
        beside = train(ds, tmp_path / "beside", _cfg(tiny_model, batch_size=0, grad_accum=4, threads=0))
    steps = [m for m in rf.read_metrics(tmp_path / "beside") if "loss" in m]
    assert [(m["side_by_side"], m["other_trainings"], m["threads"]) for m in steps] == [(1, 1, 1)] * 3
    assert ran == [] and beside["steps"] == 3
    # one at a time on the kept thread, never the main one (which ran torch's ops on every core)
    assert where == ["ftf-alone"] * 12
    monkeypatch.setattr(hardware.CoreShare, "others_busy", lambda self: 1.0)  # a spinner, not ours
    alone = train(ds, tmp_path / "alone", _cfg(tiny_model, batch_size=0, grad_accum=4, threads=0))
    ways = [m["side_by_side"] for m in rf.read_metrics(tmp_path / "alone") if "loss" in m]
    assert ways[:2] == [2, 1] and alone["steps"] == 3  # it has left: the busy choice is back
    assert not list(Path(os.environ["FTF_TRAINERS_DIR"]).glob("*.training"))  # both runs left too


def test_the_busy_choice_keeps_the_faster_way_then_measures_again() -> None:
    from finetuneflow.train.side_by_side import BusyChoice

    choice = BusyChoice(keep=2)
    assert choice.side() is True
    choice.record(True, 12.0, 1000)  # side by side: 12 ms a token
    assert choice.side() is False
    choice.record(False, 10.0, 1000)  # one at a time: 10 ms
    assert [choice.side(), choice.side()] == [False, False]
    choice.record(False, 10.0, 1000)
    choice.record(False, 10.0, 1000)  # kept for two steps: both are tried again
    assert choice.side() is True
    choice.record(True, 5.0, 600)  # per real token: 8.3 ms against 9 ms
    choice.record(False, 9.0, 1000)
    assert choice.side() is True


def test_out_of_memory_side_by_side_goes_one_micro_batch_at_a_time_first(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    ds = chat_dataset(tmp_path / "ds")
    cfg = _cfg(tiny_model, batch_size=0, grad_accum=4, threads=2)  # two 1-row micro-batches at once (fp32)
    plain = train(ds, tmp_path / "plain", cfg)
    real = loop_module.summed_loss

    def crowded(model: Any, batch: dict[str, Any], chunk: int = 4096) -> Any:
        if threading.current_thread().name.startswith("ftf-micro"):  # "two at once do not fit"
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 2 GB")
        return real(model, batch, chunk)

    monkeypatch.setattr(loop_module, "summed_loss", crowded)
    events: list[Any] = []
    backed = train(ds, tmp_path / "backed", cfg, events.append)
    assert backed["oom_backoffs"] == [{"step": 1, "micro_size": 1, "one_at_a_time": True}]
    assert backed["final_loss"] == pytest.approx(plain["final_loss"], rel=1e-5)
    said = [e.message for e in events if e.stage == "oom"]
    assert said == ["out of memory at step 1: continuing with one micro-batch at a time"]


def test_dropout_or_checkpointing_keeps_micro_batches_one_at_a_time(tiny_model: Path, tmp_path: Path) -> None:
    ds = chat_dataset(tmp_path / "ds")
    for name, kw in (
        ("drop", {"lora": LoraSettings(dropout=0.1)}),
        ("ckpt", {"gradient_checkpointing": True}),
    ):
        train(ds, tmp_path / name, _cfg(tiny_model, batch_size=0, grad_accum=4, threads=2, max_steps=1, **kw))
        assert rf.read_json(tmp_path / name / rf.CONFIG)["side_by_side"] == 1, name  # masks, RNG state


def test_out_of_memory_at_one_row_stops_with_a_plan(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_memory(*_: Any, **__: Any) -> Any:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(loop_module, "summed_loss", no_memory)
    with pytest.raises(TrainingError, match="out of memory at step 1 even with 1 row.*ftf plan"):
        train(chat_dataset(tmp_path / "ds"), tmp_path / "run", _cfg(tiny_model))


def test_other_runtime_errors_are_not_taken_for_out_of_memory(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(loop_module, "summed_loss", broken)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        train(chat_dataset(tmp_path / "ds"), tmp_path / "run", _cfg(tiny_model))


@pytest.mark.parametrize(
    ("lora", "check"),
    [
        (LoraSettings(r=4, alpha=8, rslora=True), lambda c: c.use_rslora),
        (LoraSettings(r=4, alpha=8, dora=True), lambda c: c.use_dora),
        (
            LoraSettings(target_modules="q_proj,v_proj"),
            lambda c: set(c.target_modules) == {"q_proj", "v_proj"},
        ),
    ],
)  # fmt: skip
def test_lora_variants_train_and_save_their_settings(
    tiny_model: Path, tmp_path: Path, lora: LoraSettings, check: Any
) -> None:
    from peft import PeftConfig

    summary = train(chat_dataset(tmp_path / "ds"), tmp_path / "run", _cfg(tiny_model, lora=lora, max_steps=2))
    assert summary["method"] == "lora" and summary["steps"] == 2
    assert check(PeftConfig.from_pretrained(str(tmp_path / "run" / rf.ADAPTER)))


def test_full_fine_tuning_changes_every_weight_kind_and_saves_a_model(
    tiny_model: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    summary = train(chat_dataset(tmp_path / "ds"), tmp_path / "run", _cfg(tiny_model, method="full"))
    assert summary["method"] == "full"
    config = rf.read_json(tmp_path / "run" / rf.CONFIG)
    assert config["trainable_params"] == config["total_params"]
    before = load_file(str(tiny_model / "model.safetensors"))
    after = load_file(str(tmp_path / "run" / rf.FULL_MODEL / "model.safetensors"))
    assert set(after) == set(before)
    assert all(not torch.equal(before[k], after[k]) for k in before if "layers.0" in k and "weight" in k)
    assert (tmp_path / "run" / rf.FULL_MODEL / "tokenizer.json").exists()


def test_qlora_on_a_cpu_trains_lora_and_says_why(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[Any] = []
    qlora = _cfg(tiny_model, method="qlora", device="cpu")
    summary = train(chat_dataset(tmp_path / "ds"), tmp_path / "run", qlora, events.append)
    assert summary["method"] == "lora"
    config = rf.read_json(tmp_path / "run" / rf.CONFIG)
    assert config["method"] == "lora" and config["train"]["method"] == "qlora"  # asked for, and ran
    assert resolve_method(qlora, "cpu") == ("lora", config["notes"])  # the one reason, recorded
    (why,) = config["notes"]
    assert why.startswith("QLoRA's 4-bit base needs a CUDA GPU here; training plain LoRA instead")
    assert why.endswith("Set method='lora' to silence this.")
    assert [e.message for e in events if e.stage == "note"] == [why]

    # on a GPU: QLoRA when bitsandbytes imports, else LoRA with the install command
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails even where it is installed
    assert resolve_method(qlora, "cuda") == (
        "lora",
        ["QLoRA needs bitsandbytes: pip install 'finetuneflow[qlora]'. Training plain LoRA instead."],
    )
    monkeypatch.setitem(sys.modules, "bitsandbytes", types.ModuleType("bitsandbytes"))
    assert resolve_method(qlora, "cuda") == ("qlora", [])


def test_four_bit_loader_runs_on_this_machine(tiny_model: Path) -> None:
    """The QLoRA loading path itself (what CUDA runs), exercised on the CPU backend of bitsandbytes."""
    pytest.importorskip("bitsandbytes", reason="the qlora extra (bitsandbytes) is not installed")
    from finetuneflow.train.model_setup import attach_lora, load_4bit

    model = attach_lora(load_4bit(tiny_model, "cpu"), _cfg(tiny_model))
    kinds = {type(m).__name__ for m in model.modules()}
    assert "Linear4bit" in kinds
    # the unquantized rest in the compute dtype (an fp32 one doubled the saved activations), norms fp32
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert {p.dtype for n, p in model.named_parameters() if "norm" in n} == {torch.float32}
    ids = torch.randint(0, 300, (1, 16))
    labels = ids.clone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = summed_loss(
            model, {"input_ids": ids, "labels": labels, "position_ids": torch.arange(16)[None]}
        )
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_fp16_uses_a_loss_scaler_and_stays_finite(tiny_model: Path, tmp_path: Path) -> None:
    from finetuneflow.train.loop import make_optimizer

    model = build_model(tiny_model, _cfg(tiny_model), "cpu").model
    _, scaler, _ = make_optimizer(model, _cfg(tiny_model), torch.float16, "cpu")
    assert scaler is not None and scaler.is_enabled()
    summary = train(chat_dataset(tmp_path / "ds"), tmp_path / "run", _cfg(tiny_model, precision="fp16"))
    assert summary["steps"] == 3 and summary["final_loss"] == pytest.approx(summary["final_loss"])
    assert json.loads((tmp_path / "run" / rf.CONFIG).read_text())["autocast"] == "torch.float16"


def test_gradient_checkpointing_gives_the_same_run(tiny_model: Path, tmp_path: Path) -> None:
    ds = chat_dataset(tmp_path / "ds")
    plain = train(ds, tmp_path / "a", _cfg(tiny_model))
    ckpt = train(ds, tmp_path / "b", _cfg(tiny_model, gradient_checkpointing=True))
    assert ckpt["final_loss"] == pytest.approx(plain["final_loss"], rel=1e-5)


def test_checkpoint_settings_default_to_saving_at_each_eval(tiny_model: Path, tmp_path: Path) -> None:
    from finetuneflow.train import checkpoint as ckpt

    train(chat_dataset(tmp_path / "ds"), tmp_path / "run", _cfg(tiny_model, max_steps=4, eval_every=2,
          checkpoints=CheckpointSettings(keep_last=5)))  # fmt: skip
    assert [d.name for d in ckpt.checkpoint_dirs(tmp_path / "run")] == ["step-000002", "step-000004"]


def test_bf16_lora_keeps_the_frozen_base_in_bf16_for_the_same_numbers(tiny_model: Path) -> None:
    cfg = _cfg(tiny_model, attention="sdpa")
    torch.manual_seed(0)
    small = build_model(tiny_model, cfg, "cpu", torch.bfloat16).model
    frozen = {p.dtype for p in small.parameters() if not p.requires_grad and p.ndim >= 2}
    assert frozen == {torch.bfloat16}
    assert {p.dtype for p in small.parameters() if p.requires_grad} == {torch.float32}
    assert {p.dtype for p in small.parameters() if p.ndim == 1} == {torch.float32}  # norms
    torch.manual_seed(0)  # the same LoRA init on an fp32 base
    wide = build_model(tiny_model, cfg, "cpu").model
    assert {p.dtype for p in wide.parameters()} == {torch.float32}
    with torch.no_grad():  # a trained-looking adapter, the same in both
        for (_, a), (_, b) in zip(small.named_parameters(), wide.named_parameters(), strict=True):
            if a.requires_grad:
                a.normal_(0, 0.05, generator=torch.Generator().manual_seed(a.numel()))
                b.copy_(a)
    ids = torch.randint(0, 300, (2, 48), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "labels": ids.clone(), "position_ids": torch.arange(48).repeat(2, 1)}
    losses = []
    for model in (small, wide):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = summed_loss(model, batch)
        losses.append(float(loss))
    assert losses[0] == pytest.approx(losses[1], rel=1e-2)  # autocast runs the matmuls in bf16 anyway


def test_attention_kernel_is_eager_only_for_short_rows_on_a_cpu(tiny_model: Path, tmp_path: Path) -> None:
    from finetuneflow.train.model_setup import attention_kernel

    assert attention_kernel(_cfg(tiny_model), "cpu") == "ftf_eager"
    assert attention_kernel(_cfg(tiny_model, attention="eager"), "cpu") == "eager"
    assert attention_kernel(_cfg(tiny_model, max_len=2048), "cpu") == "ftf_eager"
    assert attention_kernel(_cfg(tiny_model, max_len=4096), "cpu") == "sdpa"
    assert attention_kernel(_cfg(tiny_model), "cuda") == "sdpa"
    assert attention_kernel(_cfg(tiny_model, attention="sdpa"), "cpu") == "sdpa"
    train(chat_dataset(tmp_path / "ds"), tmp_path / "run", _cfg(tiny_model, device="cpu"))
    assert rf.read_json(tmp_path / "run" / rf.CONFIG)["attention"] == "ftf_eager"
