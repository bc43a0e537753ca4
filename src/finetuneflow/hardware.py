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

    def settle(self, sample_s: float = 0.3) -> int:
        """Decide now, from a short look at the load, so the first seconds of work do not run
        oversubscribed; returns the count (later :meth:`adapt` calls keep ``every_s``)."""
        every, self.every_s = self.every_s, sample_s
        time.sleep(sample_s)
        try:
            return self.adapt()
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


@cache
def cpu_has_bf16() -> bool:
    """True for CPUs with native bf16 matmul (AVX-512 BF16 or AMX); there bf16 runs ~4x fp32 speed."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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
    if device == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return None


def autocast(device: str, dtype: Any) -> AbstractContextManager[Any]:
    """An autocast context for ``dtype`` (a no-op when dtype is None)."""
    import torch

    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device, dtype=dtype)
