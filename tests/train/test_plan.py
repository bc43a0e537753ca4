"""The hardware plan: parameter counts from config.json, the memory estimate's shape and calibration,
recommendations instead of crashes, the micro-benchmark and ``ftf plan``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from finetuneflow.config import to_dict
from finetuneflow.models.loss import fused_chunk_logits
from finetuneflow.state.datasets import split_path, write_jsonl
from finetuneflow.train.config import LoraSettings, TrainConfig
from finetuneflow.train.machine import Hardware, probe
from finetuneflow.train.measure import micro_benchmark
from finetuneflow.train.memory import (
    GIB,
    HEADROOM,
    Split,
    auto_split,
    dims,
    estimate_memory,
    lora_params,
    param_count,
)
from finetuneflow.train.plan import apply_changes, dataset_dir_of, recommend
from train.test_step import tiny_dataset

SMOLLM2_135M = dict(
    model_type="llama",
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    tie_word_embeddings=True,
)
SMOLLM2_1_7B = {**SMOLLM2_135M, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
                "num_attention_heads": 32, "num_key_value_heads": 32}  # fmt: skip
LLAMA_7B_UNTIED = {**SMOLLM2_135M, "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
                   "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
                   "tie_word_embeddings": False}  # fmt: skip
GEMMA3_270M = dict(model_type="gemma3_text", vocab_size=262144, hidden_size=640, intermediate_size=2048,
                   num_hidden_layers=18, num_attention_heads=4, num_key_value_heads=1, head_dim=256,
                   tie_word_embeddings=True)  # fmt: skip


def cpu(available_gib: float, bf16: bool = True) -> Hardware:
    ram = int(available_gib * GIB)
    return Hardware("cpu", "test CPU", 2, ram, ram, bf16, 100 * GIB)


def cuda(free_gib: float) -> Hardware:
    free = int(free_gib * GIB)
    return Hardware("cuda", "test GPU", 8, 64 * GIB, 60 * GIB, False, 100 * GIB, free, free, "8.0", True)


def meta_params(model_cfg: dict[str, Any]) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):  # shapes only: a 7B model costs no memory
        model = LlamaForCausalLM(LlamaConfig(**model_cfg))
    return sum(p.numel() for p in model.parameters())


def test_param_count_matches_the_real_tiny_model(tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    model_cfg = json.loads((tiny_model / "config.json").read_text())
    assert param_count(dims(model_cfg)) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("model_cfg", [SMOLLM2_135M, SMOLLM2_1_7B, LLAMA_7B_UNTIED])
def test_param_count_matches_llama_shapes(model_cfg: dict[str, Any]) -> None:
    assert param_count(dims(model_cfg)) == meta_params(model_cfg)


def test_param_count_of_smollm2_is_the_documented_134_5m() -> None:
    assert param_count(dims(SMOLLM2_135M)) == pytest.approx(134.5e6, rel=1e-3)


@pytest.mark.parametrize(
    "lora",
    [LoraSettings(), LoraSettings(r=4, target_modules="q_proj,v_proj"), LoraSettings(r=8, dora=True)],
)
def test_adapter_size_matches_peft(tiny_model: Path, lora: LoraSettings) -> None:
    from transformers import AutoModelForCausalLM

    from finetuneflow.train.step import attach_lora

    model = attach_lora(AutoModelForCausalLM.from_pretrained(str(tiny_model)), TrainConfig(lora=lora))
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model_cfg = json.loads((tiny_model / "config.json").read_text())
    assert lora_params(dims(model_cfg), lora.r, lora.target_modules, lora.dora) == trained


def total(cfg: TrainConfig, hw: Hardware | None = None, model_cfg: dict[str, Any] = SMOLLM2_135M) -> int:
    return estimate_memory(model_cfg, cfg, hw or cpu(20)).total


def test_estimate_grows_with_batch_and_length_and_shrinks_with_checkpointing_and_bf16() -> None:
    base = TrainConfig(batch_size=4, max_len=512, precision="bf16", attention="sdpa")
    assert total(apply_changes(base, {"batch_size": 8})) > total(base)
    assert total(apply_changes(base, {"max_len": 1024})) > total(base)
    assert total(apply_changes(base, {"gradient_checkpointing": True})) < total(base)
    assert total(apply_changes(base, {"precision": "fp32"})) > total(base)
    assert total(apply_changes(base, {"method": "full"})) > total(base)
    assert total(apply_changes(base, {"method": "qlora"}), cuda(80)) < total(base, cuda(80))
    fp32 = estimate_memory(SMOLLM2_135M, apply_changes(base, {"precision": "fp32"}), cpu(20))
    bf16 = estimate_memory(SMOLLM2_135M, base, cpu(20))
    # a LoRA run's base is loaded in bf16, so its residual stream is bf16 too: every saved value halves
    assert fp32.activations / bf16.activations == pytest.approx(2)
    full = apply_changes(base, {"method": "full"})  # fp32 weights under autocast: the residual stays fp32
    full_fp32 = estimate_memory(SMOLLM2_135M, apply_changes(full, {"precision": "fp32"}), cpu(20))
    assert 1.5 < full_fp32.activations / estimate_memory(SMOLLM2_135M, full, cpu(20)).activations < 2


def test_precision_auto_follows_the_hardware() -> None:
    cfg = TrainConfig()
    assert estimate_memory(SMOLLM2_135M, cfg, cpu(20, bf16=True)).compute == "bf16"
    assert estimate_memory(SMOLLM2_135M, cfg, cpu(20, bf16=False)).compute == "fp32"
    old_gpu = Hardware("cuda", "T4", 4, GIB, GIB, False, GIB, 16 * GIB, 15 * GIB, "7.5", False)
    assert estimate_memory(SMOLLM2_135M, cfg, old_gpu).compute == "fp16"


# Peak RSS of `ftf plan`'s micro-benchmark (2 steps, a fresh process) on the real SmolLM2-135M-Instruct,
# bench/train.py's chat rows (77% of tokens supervised), one thread unless auto splits the step over
# two: `python bench/train_memory.py`, AVX2-only AMD EPYC, 2026-12-06.
MEASURED = [
    (dict(precision="fp32", batch_size=1), 0.77, 1.90),
    (dict(precision="fp32", batch_size=2), 0.77, 2.68),
    (dict(precision="fp32", batch_size=4), 0.77, 4.53),
    # 1 row x 2 side by side since auto takes one row in fp32 (Intel Xeon without AMX, 2026-12-07;
    # 2 rows x 2 measured 4.36 before)
    (dict(precision="fp32", batch_size=0, grad_accum=4), 0.77, 3.11),
    (dict(precision="fp32", batch_size=2, attention="sdpa"), 0.77, 2.72),
    (
        dict(precision="fp32", batch_size=1, max_len=2048, attention="sdpa"),
        0.77,
        4.85,
    ),  # its (len x len) mask
    (dict(precision="fp32", batch_size=1, max_len=2048), 0.77, 4.57),  # ours (from the 3-step A/B)
    (dict(precision="fp32", batch_size=2, attention="eager"), 0.77, 3.45),  # transformers' own
    (dict(precision="fp32", batch_size=2, gradient_checkpointing=True), 0.77, 1.64),
    (dict(precision="fp32", batch_size=1, max_len=1024), 0.77, 2.76),
    (dict(precision="fp32", batch_size=2, method="full"), 0.77, 3.92),
    (dict(precision="fp32", batch_size=2, **{"lora.dropout": 0.05}), 0.77, 4.14),  # peft's own forward
    (dict(precision="bf16", batch_size=1), 0.77, 1.31),
    (dict(precision="bf16", batch_size=2), 0.77, 1.75),
    # Gemma 3 270M (`--model gemma3-270m`): its norms are not Llama's, so transformers runs them
    (dict(precision="fp32", batch_size=1, model=GEMMA3_270M), 0.83, 2.53),
    (dict(precision="fp32", batch_size=2, model=GEMMA3_270M), 0.83, 3.29),
]


@pytest.mark.parametrize(("changes", "supervised", "gib"), MEASURED)
def test_estimate_is_within_25_percent_of_measured_peaks(
    changes: dict[str, Any], supervised: float, gib: float
) -> None:
    changes = dict(changes)
    model_cfg = changes.pop("model", SMOLLM2_135M)
    cfg = apply_changes(TrainConfig(max_len=512, grad_accum=1), changes)
    estimate = estimate_memory(model_cfg, cfg, cpu(20), supervised).total / GIB
    assert estimate == pytest.approx(gib, rel=0.25)


def test_a_deliberately_too_large_configuration_gets_a_plan_instead_of_a_crash() -> None:
    cfg = TrainConfig(batch_size=16, grad_accum=1, max_len=4096, precision="bf16")
    plan = recommend(SMOLLM2_1_7B, cfg, cpu(2))
    assert not plan.fits
    assert plan.changes["gradient_checkpointing"] is True
    assert plan.changes["batch_size"] == 1 and plan.changes["grad_accum"] == 16  # effective batch kept
    verdict = plan.reasons[-1]
    assert verdict.startswith("does not fit: needs ~") and "has 1.7 GiB usable" in verdict
    assert "smaller model (e.g. " in verdict
    assert plan.after.total < plan.before.total
    assert any("lengths are unknown" in r for r in plan.reasons)  # no lengths: max_len left alone


def test_shorter_rows_only_as_far_as_the_examples_allow() -> None:
    cfg = TrainConfig(batch_size=16, grad_accum=1, max_len=4096, precision="bf16")
    lengths = [300] * 99 + [900]
    plan = recommend(SMOLLM2_1_7B, cfg, cpu(2), lengths)
    assert plan.changes["max_len"] == 512  # 256 would cut all 99 short examples; 512 cuts one (1%)
    assert plan.truncated == 1
    assert any("1 of 100 examples are longer" in r for r in plan.reasons)


def test_a_big_batch_is_rescued_by_checkpointing_and_accumulation() -> None:
    cfg = TrainConfig(batch_size=16, max_len=512, grad_accum=2, precision="bf16")
    plan = recommend(SMOLLM2_135M, cfg, cpu(3))
    assert plan.fits and plan.after.total <= plan.budget < plan.before.total
    assert plan.changes["gradient_checkpointing"] is True
    assert plan.changes["batch_size"] * plan.changes["grad_accum"] == 32
    assert plan.reasons[-1].startswith("fits: needs ~")


def test_a_config_that_fits_is_left_alone() -> None:
    plan = recommend(SMOLLM2_135M, TrainConfig(), cpu(20))
    assert plan.fits and plan.changes == {} and plan.precision == "bf16"
    side = "micro-batch: 2 of a step's 4 rows at once, 2 micro-batches side by side (one core each)"
    assert f"{side} (batch_size 0 = auto)" in plan.reasons


def test_auto_micro_batch_takes_two_rows_per_core_on_a_cpu_and_the_whole_step_on_a_gpu_where_they_fit() -> (
    None
):
    auto = TrainConfig(precision="bf16")  # batch_size 0 (auto), grad_accum 4: a step is 4 rows
    assert (auto.batch_size, auto.step_rows) == (0, 4)

    def need(hw: Hardware, rows: int) -> float:  # GiB free that `rows` in memory at once need
        held = replace(auto, batch_size=rows, grad_accum=max(1, 4 // rows))
        return estimate_memory(SMOLLM2_135M, held, hw).total / HEADROOM / GIB

    def between(low: float, high: float) -> Hardware:
        return cpu((low + high) / 2)

    c = cpu(20)  # 2 cores
    assert auto_split(SMOLLM2_135M, auto, c) == Split(2, 2)  # two 2-row micro-batches side by side
    # in fp32 one row (the same activation bytes; 2 rows were no faster there, bench/train.py)
    assert auto_split(SMOLLM2_135M, replace(auto, precision="fp32"), c) == Split(1, 2)
    no_bf16 = replace(c, cpu_bf16=False)
    assert auto_split(SMOLLM2_135M, replace(auto, precision="auto"), no_bf16) == Split(1, 2)
    assert auto_split(SMOLLM2_135M, auto, between(need(c, 2), need(c, 4))) == Split(2, 1)
    assert auto_split(SMOLLM2_135M, auto, between(need(c, 1), need(c, 2))) == Split(1, 1)
    assert auto_split(SMOLLM2_135M, auto, replace(c, cpu_cores=1)) == Split(2, 1)
    assert auto_split(SMOLLM2_135M, replace(auto, method="full"), c) == Split(2, 1)  # full-size gradients
    assert auto_split(SMOLLM2_135M, replace(auto, grad_accum=3), c) == Split(1, 2)  # 2 does not divide 3
    assert auto_split(SMOLLM2_135M, replace(auto, batch_size=3), cpu(1)) == Split(3, 1)  # a set size is kept
    assert auto_split(SMOLLM2_135M, auto, cuda(40)) == Split(4, 1)
    g = cuda(40)
    assert auto_split(SMOLLM2_135M, auto, cuda((need(g, 2) + need(g, 4)) / 2)) == Split(2, 1)
    held = replace(auto, batch_size=4, grad_accum=1)  # what two 2-row micro-batches hold at once
    side, one = estimate_memory(SMOLLM2_135M, auto, c), estimate_memory(SMOLLM2_135M, held, c)
    assert replace(side, logits=one.logits) == one
    assert side.logits - one.logits == 4 * fused_chunk_logits(False)  # each thread's chunk of fp32 logits
    fp32 = estimate_memory(SMOLLM2_135M, replace(auto, precision="fp32"), c)  # Split(1, 2): two threads
    states = fp32.tokens // 2 * SMOLLM2_135M["hidden_size"] * 4  # half the tokens supervised, fp32
    assert fp32.logits == 2 * 4 * fused_chunk_logits(True) + states  # fp32 products: longer chunks


def test_qlora_on_a_cpu_becomes_lora_with_the_reason() -> None:
    plan = recommend(SMOLLM2_135M, TrainConfig(method="qlora"), cpu(20, bf16=True))
    assert plan.changes == {"method": "lora"}
    assert "4-bit QLoRA needs CUDA here" in plan.reasons[0] and "bf16 autocast" in plan.reasons[0]


def test_bf16_on_a_cpu_without_bf16_becomes_fp32() -> None:
    plan = recommend(SMOLLM2_135M, TrainConfig(precision="bf16"), cpu(20, bf16=False))
    assert plan.changes == {"precision": "fp32"} and plan.precision == "fp32"


def test_native_bf16_that_measured_slower_trains_in_fp32_unless_asked() -> None:
    from dataclasses import replace

    slow = replace(cpu(20, bf16=False), cpu_bf16_speedup=0.56)  # AVX-512 BF16, no AMX: fp32 is faster
    auto = recommend(SMOLLM2_135M, TrainConfig(), slow)
    assert auto.precision == "fp32" and "precision" not in auto.changes
    assert any("0.56x fp32's speed" in r and r.startswith("precision: fp32") for r in auto.reasons)
    asked = recommend(SMOLLM2_135M, TrainConfig(precision="bf16"), slow)  # native: kept, with the cost
    assert asked.precision == "bf16" and "precision" not in asked.changes
    assert any("precision auto would train in fp32" in r for r in asked.reasons)
    fast = recommend(SMOLLM2_135M, TrainConfig(), replace(cpu(20), cpu_bf16_speedup=2.1))
    assert fast.precision == "bf16" and any("2.10x fp32's speed" in r for r in fast.reasons)


def test_the_bf16_probe_times_the_machine_it_runs_on() -> None:
    import torch

    from finetuneflow import hardware

    speedup = hardware.cpu_bf16_speedup()
    if hardware.cpu_native_bf16():  # timed: a ratio a real matmul pair gives, and the choice follows it
        assert speedup is not None and 0.01 < speedup < 100
    else:  # no bf16 instructions: nothing timed, never bf16
        assert speedup is None
    prefers = speedup is not None and speedup > 1.0
    assert hardware.cpu_prefers_bf16() == prefers
    assert hardware.autocast_dtype("cpu", "auto") == (torch.bfloat16 if prefers else None)


def test_full_becomes_lora_then_qlora_on_a_small_gpu() -> None:
    plan = recommend(LLAMA_7B_UNTIED, TrainConfig(method="full", batch_size=1, max_len=1024), cuda(12))
    assert plan.fits and plan.changes["method"] == "qlora"
    assert any(r.startswith("method full -> lora") for r in plan.reasons)
    assert any(r.startswith("method lora -> qlora") for r in plan.reasons)


def test_with_several_gpus_a_plan_that_does_not_fit_says_what_sharding_would_hold() -> None:
    from dataclasses import replace

    cfg = TrainConfig(batch_size=1, max_len=256)
    eight = recommend(LLAMA_7B_UNTIED, cfg, replace(cuda(6), gpu_count=8))
    assert not eight.fits  # not even QLoRA fits one 6 GB GPU
    hint = eight.reasons[-1]
    assert "sharded over your 8 GPUs with method=lora" in hint and "--parallel fsdp" in hint
    assert hint.endswith(", fits")
    # activations, the root unit and the layers being gathered are not divided by the GPU count
    four = recommend(LLAMA_7B_UNTIED, cfg, replace(cuda(6), gpu_count=4))
    assert four.reasons[-1].endswith("still does not fit")
    one = recommend(LLAMA_7B_UNTIED, cfg, cuda(6))
    assert not any("sharded" in r for r in one.reasons)


def test_apply_changes_reaches_sections() -> None:
    cfg = apply_changes(TrainConfig(), {"batch_size": 2, "lora.r": 8})
    assert cfg.batch_size == 2 and cfg.lora.r == 8 and TrainConfig().lora.r == 16


def test_probe_reads_this_machine(tmp_path: Path) -> None:
    hw = probe(tmp_path)
    assert hw.device in ("cpu", "cuda", "mps") and hw.cpu_cores >= 1
    assert 0 < hw.ram_available <= hw.ram_total and hw.disk_free > 0 and hw.memory_available > 0
    json.dumps(hw.to_dict())


def test_dataset_dir_of_a_project_folder(tmp_path: Path) -> None:
    (tmp_path / "datasets" / "only").mkdir(parents=True)
    assert dataset_dir_of(tmp_path) == tmp_path / "datasets" / "only"
    assert dataset_dir_of(tmp_path / "datasets" / "only") == tmp_path / "datasets" / "only"
    (tmp_path / "datasets" / "other").mkdir()
    with pytest.raises(LookupError, match="only, other"):
        dataset_dir_of(tmp_path)


def test_micro_benchmark_measures_tokens_per_s_memory_and_an_eta(tiny_model: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(base_model=str(tiny_model), max_len=64, batch_size=2, grad_accum=2, epochs=2, threads=1)
    dataset = tiny_dataset(tmp_path / "ds")
    measured = micro_benchmark(dataset, cfg, steps=3)
    assert measured.steps == 3 and measured.warmup_skipped
    assert measured.tokens_per_s > 0 and measured.eta_seconds is not None
    assert measured.eta_seconds == pytest.approx(measured.run_tokens / measured.tokens_per_s, abs=1e-3)
    assert measured.run_tokens == 2 * measured.dataset_tokens
    # The peak is the process's: measure it in a fresh one, as `ftf plan` runs, not in this pytest
    # process that earlier tests have grown. The tiny model's peak is the runtime's (torch,
    # transformers): the estimate's overhead term.
    code = (
        "import json, sys; from pathlib import Path; from finetuneflow.config import from_dict;"
        "from finetuneflow.train.config import TrainConfig;"
        "from finetuneflow.train.plan import micro_benchmark;"
        "cfg = from_dict(TrainConfig, json.loads(sys.argv[2]));"
        "print(micro_benchmark(Path(sys.argv[1]), cfg, steps=3).peak_memory)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    args = [sys.executable, "-c", code, str(dataset), json.dumps(to_dict(cfg))]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    peak = int(done.stdout.strip().splitlines()[-1])
    model_cfg = json.loads((tiny_model / "config.json").read_text())
    estimate = estimate_memory(model_cfg, cfg, probe(tmp_path)).total
    assert 0.7 < peak / estimate < 1.7
    assert not list(tmp_path.glob("**/summary.json"))  # the benchmark's run folder is temporary


def test_ftf_plan_json_and_table(tiny_model: Path, tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from finetuneflow import paths
    from finetuneflow.cli.train import register

    app = typer.Typer()
    app.callback()(lambda: None)  # a group, so the command is called by name as in `ftf plan`
    register(app)
    tiny_dataset(paths.project_dir("p") / "datasets" / "d")
    settings = tmp_path / "train.json"
    settings.write_text(json.dumps({"threads": 1}))  # the shared test box: one torch thread
    args = [
        "plan",
        "-p",
        "p",
        "--dataset",
        "d",
        "--model",
        str(tiny_model),
        "--max-len",
        "64",
        "-c",
        str(settings),
    ]
    result = CliRunner().invoke(app, [*args, "--batch-size", "2", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["plan"]["fits"] and out["measured"]["tokens_per_s"] > 0 and out["measured"]["eta_seconds"] > 0
    assert out["dataset"]["examples"] == 12 and out["model"]["params"] > 0
    table = CliRunner().invoke(app, [*args, "--no-benchmark"])
    assert table.exit_code == 0, table.output
    assert "Estimate" in table.output and "activations" in table.output and "fits: needs" in table.output
    assert out["goal"]["goal"] == "style" and "budgets" not in out["goal"]  # chats only: auto is style
    assert "goal: style" in table.output
    # document text in the dataset: auto is the knowledge goal, and the plan gives its budgets
    text = split_path(paths.project_dir("p") / "datasets" / "d", "text", "train")
    write_jsonl(text, [{"text": "E1: lid."}])
    knowledge = CliRunner().invoke(app, [*args, "--no-benchmark"])
    assert knowledge.exit_code == 0, knowledge.output
    said = " ".join(knowledge.output.split())  # Rich wraps lines to the terminal's width
    assert "goal: knowledge" in said and "Knowledge goal here (estimated" in said
    assert "one pass teaches the format" in said and "the recall probe still keeps the best step" in said
    missing = CliRunner().invoke(app, ["plan", "-p", "p", "--dataset", "nope", "--no-benchmark"])
    assert missing.exit_code == 2 and "no dataset 'nope'" in missing.output


def test_what_the_loop_cannot_fuse_or_pack_is_counted() -> None:
    """The paths that keep more than a fused Llama LoRA step: each raises the estimate."""
    base = TrainConfig(batch_size=2, max_len=1024, precision="bf16")
    plain = total(base)
    assert total(base, model_cfg={**SMOLLM2_135M, "model_type": "gemma3_text"}) > plain  # its own norms
    windowed = {**SMOLLM2_135M, "sliding_window": 512}  # rows past the window: the masked path
    assert total(base, model_cfg=windowed) > plain
    assert total(replace(base, max_len=512), model_cfg=windowed) == total(replace(base, max_len=512))
    assert total(base, model_cfg={**SMOLLM2_135M, "attention_dropout": 0.1}) > plain  # whole squares
    assert total(base, model_cfg={**SMOLLM2_135M, "model_type": "phi"}) > plain  # a head with a bias
    assert total(base, model_cfg={**SMOLLM2_135M, "final_logit_softcapping": 30.0}) > plain  # Gemma 2
    moe = {**SMOLLM2_135M, "num_local_experts": 4, "num_experts_per_tok": 2}
    extra = (
        estimate_memory(moe, base, cpu(20)).activations
        - estimate_memory(SMOLLM2_135M, base, cpu(20)).activations
    )
    assert extra > 30 * 4 * 3 * 576 * 1536 * 2  # peft's merged expert weights, kept by every layer
    # 4-bit needs CUDA: asked for on a CPU, the run trains (and is sized as) LoRA
    assert estimate_memory(SMOLLM2_1_7B, replace(base, method="qlora"), cpu(20)) == estimate_memory(
        SMOLLM2_1_7B, base, cpu(20)
    )
