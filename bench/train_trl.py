"""The TRL peers of ``bench/train.py``: SFTTrainer with its shipped defaults, and with its best CPU
configuration (issue 16).

Both: ``SFTTrainer(model=<folder>, args=SFTConfig(...), train_dataset=Dataset of messages,
peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))``,
loss on every token, linear schedule, seed 42, ``logging_steps=10`` to the console, and set:
``use_cpu=True`` when there is no GPU; ``per_device_train_batch_size`` = ``--batch``;
``max_steps`` from the token budget; ``learning_rate=2e-4`` (ours' rate; no effect on speed);
``report_to=[]``; ``save_strategy="no"`` (the default saves a checkpoint at the last step inside
``train_runtime``; ours saves its adapter after its clock stops); ``output_dir`` a temp dir.

- ``defaults``: bf16 autocast (``bf16=True``, TRL's default), gradient checkpointing on (TRL's
  default), padding to the longest row of the batch, ``max_length=512`` (default 1024: ours' limit;
  no example is longer).
- ``padding_free`` (the best CPU configuration; TRL 1.16's SFTConfig, read from its source): bf16
  autocast where bf16 is fast (on a GPU always; on a CPU where ``hardware.cpu_prefers_bf16``: native bf16
  that measured faster than fp32), else fp32 (on an AVX2-only CPU bf16 linears ran 8.4 GFLOP/s against
  fp32's 65, one thread, 2026-12-06; on an Intel Xeon with AVX-512 BF16 but no AMX, 2026-12-07, bf16
  matmuls ran 77 against fp32's 145: a user tuning for speed turns bf16 off there),
  ``gradient_checkpointing=False``, ``padding_free=True``: a batch's examples are one flattened row with
  position ids restarting per example (no padding; transformers builds the per-example causal mask from
  the position ids). TRL 1.16 refuses ``padding_free`` without packing unless ``max_length=None`` (no
  example here is over 423 tokens, so nothing is truncated either way).
- ``packing``: the same with ``packing=True`` (best-fit decreasing into ``max_length=512`` rows,
  which turns padding-free on): a step is ``--batch`` packed rows, flattened into one.
  Measured against ``padding_free`` once: see ``BEST`` below.

Real tokens: the attention-mask sum of every batch passed to ``training_step`` (padding-free
batches have no mask and no padding: every token); seconds: ``train_runtime`` of
``trainer.train()`` (model load and dataset tokenization happen before it).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

CONFIGS = ("defaults", "padding_free", "packing")
# TRL's best CPU configuration, the peer ``trl_best`` runs. Measured 2026-12-03 (AMX Xeon, 1 thread,
# a heavily loaded 2-core box: load average 4-5; two back-to-back runs of ``bench/train.py --engines
# trl_best --rounds 1 --tokens 4096 --trl-best X``): padding_free 36.1 real tok/s (74.7 after its first
# step) at 5.75 GiB peak RSS; packing 34.1 tok/s (one 3958-token step, first-step costs included) at
# 9.51 GiB (bfd packs a step's 8 rows of 512 into one ~4k-token flattened row).
# padding_free is kept: faster here and 0.6x the memory.
BEST = "padding_free"


def steady(tokens: list[int], marks: list[float]) -> float | None:
    """Real tokens/s after the first step (``marks``: clock at the end of each step), if > 1 step."""
    if len(marks) < 2 or len(marks) != len(tokens):
        return None
    return sum(tokens[1:]) / (marks[-1] - marks[0])


def sft_config(config: str, job: dict[str, Any], cpu: bool, row_len: int, lr: float) -> Any:
    """The ``SFTConfig`` of one peer (``config`` in ``CONFIGS``)."""
    from trl import SFTConfig

    common: dict[str, Any] = {
        "output_dir": str(Path(job["out"]) / "trl"),
        "use_cpu": cpu,
        "per_device_train_batch_size": job["batch"],
        "max_steps": job["steps"],
        "learning_rate": lr,
        "report_to": [],
        "save_strategy": "no",
    }
    if config == "defaults":
        return SFTConfig(max_length=row_len, **common)
    from finetuneflow import hardware

    bf16 = not cpu or hardware.cpu_prefers_bf16()  # the module docstring: fp32 where bf16 is slower
    best: dict[str, Any] = {"bf16": bf16, "gradient_checkpointing": False}
    if config == "padding_free":  # TRL refuses padding_free without packing unless max_length=None
        return SFTConfig(padding_free=True, max_length=None, **best, **common)
    if config == "packing":  # bfd packing implies padding-free in TRL 1.16
        return SFTConfig(packing=True, packing_strategy="bfd", max_length=row_len, **best, **common)
    raise ValueError(f"TRL config {config!r}: use one of {', '.join(CONFIGS)}")


def child_trl(job: dict[str, Any], row_len: int, lr: float, lora_r: int, lora_alpha: int) -> dict[str, Any]:
    """Train with TRL's SFTTrainer (``job['config']``: one of ``CONFIGS``), counting real tokens."""
    import torch

    torch.set_num_threads(job["threads"] or len(os.sched_getaffinity(0)))
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTTrainer

    from finetuneflow import allocator
    from finetuneflow.state.datasets import read_jsonl, split_path

    class CountingSFTTrainer(SFTTrainer):  # type: ignore[misc]
        """SFTTrainer that counts the real and padded tokens of the batches it trains on."""

        real: list[int] = []  # per training_step call (= per optimizer step: no accumulation)
        all_tokens = 0

        def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            ids = inputs["input_ids"]
            mask = inputs.get("attention_mask")  # padding-free batches have none (and no padding)
            self.real.append(int(mask.sum()) if mask is not None else int(ids.numel()))
            self.all_tokens += int(ids.numel())
            return super().training_step(model, inputs, *args, **kwargs)

    class StepClock(TrainerCallback):  # type: ignore[misc]
        marks: list[float] = []

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            self.marks.append(time.perf_counter())

    rows = read_jsonl(split_path(Path(job["dataset"]), "chat", "train"))
    args = sft_config(job["config"], job, not torch.cuda.is_available(), row_len, lr)
    lora = LoraConfig(r=lora_r, lora_alpha=lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM")
    start = time.perf_counter()
    trainer = CountingSFTTrainer(
        model=job["model"],
        args=args,
        train_dataset=Dataset.from_list([{"messages": r["messages"]} for r in rows]),
        peft_config=lora,
        callbacks=[clock := StepClock()],
    )
    before = time.perf_counter() - start
    train_start = time.perf_counter()
    with allocator.keep_freed_pages():  # as ours' loop does; nothing under glibc's malloc (as shipped)
        metrics = trainer.train().metrics
    after = time.perf_counter() - train_start - float(metrics["train_runtime"])
    tokens = sum(trainer.real)
    return {
        "tokens": tokens,
        "seconds": float(metrics["train_runtime"]),
        "steps": trainer.state.global_step,
        "outside_s": before + after,
        "steady": steady(trainer.real, clock.marks),
        "note": f"{job['config']}: padding {1 - tokens / max(1, trainer.all_tokens):.0%} of the tokens, "
        f"{tokens / max(1, len(trainer.real)):.0f} real tokens per step, train_loss "
        f"{metrics.get('train_loss', float('nan')):.3f}, torch threads {torch.get_num_threads()}",
    }
