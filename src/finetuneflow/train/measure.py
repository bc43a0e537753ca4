"""A few real training steps in a temporary run folder: tokens/s after warm-up, peak memory and the
run's ETA, for ``ftf plan`` (train/plan.py) and the studio's plan view."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from finetuneflow.train.config import TrainConfig


@dataclass
class Measured:
    """A few real training steps: throughput after warm-up, peak memory, and the run's ETA."""

    steps: int
    tokens_per_s: float  # real (non-padding) tokens per second, first step skipped when possible
    warmup_skipped: bool
    peak_memory: int  # bytes
    memory_kind: str  # "peak RSS" or "CUDA max allocated"
    seconds: float  # wall time of the benchmark, model load included
    dataset_tokens: int  # real tokens in the training split (one epoch, after truncation)
    run_tokens: int  # tokens the whole run will see (epochs, or max_steps)
    eta_seconds: float | None  # None when no tokens/s could be measured

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def micro_benchmark(dataset_dir: Path, cfg: TrainConfig, steps: int = 3) -> Measured:
    """Train ``steps`` real optimizer steps in a temporary run folder; measure tokens/s and peak memory.

    Raises whatever :func:`finetuneflow.train.step.train` raises (no data, NaN loss, out of memory).
    """
    from finetuneflow import hardware
    from finetuneflow.state import runs as rf
    from finetuneflow.train.step import prepare, train

    # eval only after the last step; the style goal so that no recall probe runs (the knowledge
    # goal's replay and rehearsal rows are ordinary rows: the speed is the same)
    bench = replace(cfg, max_steps=steps, eval_every=steps + 1, goal="style")
    device = hardware.pick_device(cfg.device)
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="ftf-plan-") as tmp:
        run_dir = Path(tmp) / "run"
        _reset_peak(device)
        summary = train(dataset_dir, run_dir, bench)
        peak, kind = _peak(device)
        metrics = [m for m in rf.read_metrics(run_dir) if "real_tokens" in m]
    tokens_per_s, skipped = _steady_tokens_per_s(metrics, summary)
    stats = (summary.get("data") or {}).get("train") or prepare(dataset_dir, cfg).stats["train"]
    tokens, rows = int(stats["tokens"]), max(1, int(stats.get("rows", 1)))
    run_tokens = tokens * cfg.epochs if cfg.epochs > 0 else math.inf
    if cfg.max_steps > 0:  # a step sees batch x accum rows of ~tokens/rows real tokens each
        run_tokens = min(run_tokens, cfg.max_steps * cfg.step_rows * tokens / rows)
    return Measured(
        steps=len(metrics),
        tokens_per_s=round(tokens_per_s, 1),
        warmup_skipped=skipped,
        peak_memory=peak,
        memory_kind=kind,
        seconds=round(time.time() - start, 1),
        dataset_tokens=tokens,
        run_tokens=int(run_tokens),
        eta_seconds=round(run_tokens / tokens_per_s, 3) if tokens_per_s > 0 else None,
    )


def _steady_tokens_per_s(metrics: list[dict[str, Any]], summary: dict[str, Any]) -> tuple[float, bool]:
    """Tokens/s over steps 2..n (step 1 warms up allocators and kernels), else the summary's figure."""
    timed = [m for m in metrics if "time_s" in m]
    if len(timed) >= 2 and timed[-1]["time_s"] > timed[0]["time_s"]:
        tokens = sum(m["real_tokens"] for m in timed[1:])
        return tokens / (timed[-1]["time_s"] - timed[0]["time_s"]), True
    if len(metrics) >= 2 and all("tokens_per_s" in m for m in metrics):
        return sum(m["tokens_per_s"] for m in metrics[1:]) / (len(metrics) - 1), True
    return float(summary.get("tokens_per_s") or 0.0), False


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
        return
    # Linux: writing 5 resets this process's peak RSS (VmHWM), so the peak is the run's own;
    # elsewhere it stays the whole process's peak since it started
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak(device: str) -> tuple[int, str]:
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.max_memory_allocated()), "CUDA max allocated"
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024, "peak RSS"
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "peak RSS"  # bytes on macOS, KiB else
