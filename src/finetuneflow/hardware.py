"""What the machine can do: device, bf16 support, thread count. Imported only by torch-using steps."""

from __future__ import annotations

import os
import time
from contextlib import AbstractContextManager, nullcontext
from functools import cache
from pathlib import Path
from typing import Any


def available_cores() -> int:
    """Cores this process may use (respects CPU affinity, e.g. in containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS/Windows
        return os.cpu_count() or 1


def setup_threads(threads: int) -> int:
    """Set torch's intra-op threads (0 = all available cores); returns the number set.

    Two threads on a busy 2-core box can be slower than one (OpenMP barrier waits), so this is a
    setting rather than a guess.
    """
    import torch

    n = threads if threads > 0 else available_cores()
    torch.set_num_threads(n)
    return n


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat; None off Linux."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def threads_for(cores: int, others_busy: float) -> int:
    """Our threads when other processes keep ``others_busy`` cores busy: the rest, at least one
    (a core more than half busy counts as taken)."""
    return max(1, cores - int(others_busy + 0.5))


class CoreShare:
    """Threads for torch that leave the cores other processes keep busy, re-decided as load
    changes: on a 2-core box with another process spinning, two OpenMP threads wait on each
    other at every barrier and a step runs slower than on one thread (FACTS.md saw 40x with three
    trainers). Samples /proc/stat between calls; a no-op where it cannot read it.
    """

    def __init__(self, cores: int, every_s: float = 5.0) -> None:
        self.cores, self.every_s = cores, every_s
        self.threads = cores
        self._last = self._sample()

    @staticmethod
    def _sample() -> tuple[float, tuple[int, int] | None, float]:
        times = os.times()
        return time.monotonic(), _cpu_jiffies(), times.user + times.system

    def others_busy(self) -> float | None:
        """Cores other processes used since the last sample (None if unknown or too soon)."""
        now = self._sample()
        (t0, j0, own0), (t1, j1, own1) = self._last, now
        if j0 is None or j1 is None or t1 - t0 < self.every_s:
            return None
        self._last = now
        tick = os.sysconf("SC_CLK_TCK")
        all_busy = (j1[0] - j0[0]) / tick / (t1 - t0)  # ticks of every CPU: busy cores
        return max(0.0, all_busy - (own1 - own0) / (t1 - t0))

    def settle(self, sample_s: float = 0.3, ours: int = 0) -> int:
        """Decide now, from a short look at the load, so the first seconds of work do not run
        oversubscribed; returns the count (later :meth:`adapt` calls keep ``every_s``). ``ours``
        other trainings of ours running count as holding their share of the cores even while
        they still load (each gets ``cores / (ours + 1)``)."""
        every, self.every_s = self.every_s, sample_s
        time.sleep(sample_s)
        try:
            threads = self.adapt()
            if ours:
                share = max(1, self.cores // (ours + 1))
                if share < threads:
                    import torch

                    torch.set_num_threads(share)
                    self.threads = threads = share
            return threads
        finally:
            self.every_s = every

    def adapt(self) -> int:
        """Set torch's threads to the cores left free (at least one); returns the count."""
        busy = self.others_busy()
        if busy is not None:
            threads = threads_for(self.cores, busy)
            if threads != self.threads:
                import torch

                torch.set_num_threads(threads)
                self.threads = threads
        return self.threads


def pick_device(requested: str = "auto") -> str:
    """``cuda`` when a GPU is present (or requested), then ``mps``, else ``cpu``."""
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


# One projection of a small model's training step: 512 tokens x 576 -> 1536 (SmolLM2-135M's MLP).
_PROBE_SHAPE = (512, 576, 1536)


def cpu_native_bf16() -> bool:
    """True for CPUs with bf16 matmul instructions (AVX-512 BF16 or AMX). Without them torch
    emulates bf16 matmuls, ~100x slower than fp32 (0.33 GFLOP/s on an AVX2-only AMD EPYC)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@cache
def cpu_bf16_speedup() -> float | None:
    """How many times an fp32 matmul's time a bf16 one took less, measured once per process on
    one thread (~0.1 s, a training projection's shape); None without native bf16.

    The instructions alone do not say bf16 pays: bf16 ran 2x fp32's rate with AMX and on AMD's
    Zen 4 and Zen 5, but 0.53x on an Intel Xeon (family 6, model 207) with AVX-512 BF16 and its
    AMX not offered by the hypervisor: 77 against 145 GFLOP/s, and a LoRA step 1.4x faster in fp32.
    """
    if not cpu_native_bf16():
        return None
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows, inner, outer = _PROBE_SHAPE
        own = torch.Generator().manual_seed(0)  # never the global one: a run's seed must not see this
        x, w = torch.randn(rows, inner, generator=own), torch.randn(outer, inner, generator=own)
        pairs = {dtype: (x.to(dtype), w.to(dtype).T) for dtype in (torch.float32, torch.bfloat16)}
        best = dict.fromkeys(pairs, float("inf"))
        for _ in range(4):  # alternating, the first round a warm-up (kernel choice): min of each
            for dtype, (a, b) in pairs.items():
                start = time.perf_counter()
                a @ b
                best[dtype] = min(best[dtype], time.perf_counter() - start)
        return best[torch.float32] / best[torch.bfloat16]
    finally:
        torch.set_num_threads(before)


def cpu_prefers_bf16() -> bool:
    """True where training on this CPU computes in bf16: native bf16 that measured faster than fp32."""
    speedup = cpu_bf16_speedup()
    return speedup is not None and speedup > 1.0


def compute_dtype(device_type: str, otherwise: Any) -> Any:
    """The dtype matmuls run in right now: autocast's where it is on for ``device_type``, else
    ``otherwise`` (what the caller's own tensors would give). For hand-written autograd functions,
    which autocast does not cast for."""
    import torch

    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else otherwise


def autocast_dtype(device: str, precision: str) -> Any:
    """The autocast dtype for ``precision`` ('auto', 'bf16', 'fp16', 'fp32'), or None for none."""
    import torch

    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "cpu" and cpu_prefers_bf16():
        return torch.bfloat16
    return None


def autocast(device: str, dtype: Any) -> AbstractContextManager[Any]:
    """An autocast context for ``dtype`` (a no-op when dtype is None)."""
    import torch

    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device, dtype=dtype)
