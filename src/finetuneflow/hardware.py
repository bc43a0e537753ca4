"""What the machine can do: device, bf16 support, thread count. Imported only by torch-using steps."""

from __future__ import annotations

import os
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
