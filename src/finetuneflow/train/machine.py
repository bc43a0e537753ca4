"""What the machine offers a training run (:func:`probe`): device, cores, RAM (cgroup limits
included), bf16 support, GPUs and free disk. It only reads the system; torch is imported lazily, to
ask about GPUs. train/memory.py sizes runs against it."""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Hardware:
    """What this machine offers a training run (bytes for every memory figure)."""

    device: str  # "cuda", "mps" or "cpu"
    device_name: str
    cpu_cores: int
    ram_total: int
    ram_available: int
    cpu_bf16: bool  # training on this CPU computes in bf16 (native, and measured faster than fp32)
    disk_free: int
    gpu_total: int = 0
    gpu_free: int = 0
    compute_capability: str = ""  # e.g. "8.0" (bf16 needs >= 8.0)
    gpu_bf16: bool = False
    gpu_count: int = 0  # CUDA devices; with several, FSDP can shard a model over them
    cpu_bf16_speedup: float | None = None  # fp32 matmul time / bf16's, measured; None: no native bf16

    @property
    def cpu_bf16_native(self) -> bool:
        """The CPU has bf16 matmul instructions (whether or not they beat fp32 here)."""
        return self.cpu_bf16 or self.cpu_bf16_speedup is not None

    @property
    def memory_kind(self) -> str:
        """Which memory limits a run: GPU memory on CUDA, RAM elsewhere (MPS shares RAM)."""
        return "GPU memory" if self.device == "cuda" else "RAM"

    @property
    def memory_available(self) -> int:
        """Bytes a run may use now."""
        return self.gpu_free if self.device == "cuda" else self.ram_available

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "memory_kind": self.memory_kind}


def probe(state_dir: Path | None = None) -> Hardware:
    """Read the device, cores, RAM, bf16 support and free disk (under the state folder)."""
    from finetuneflow import hardware, paths

    total, available = ram()
    folder = state_dir or paths.home()
    hw = Hardware(
        device="cpu",
        device_name=_cpu_name(),
        cpu_cores=hardware.available_cores(),
        ram_total=total,
        ram_available=available,
        cpu_bf16=hardware.cpu_prefers_bf16(),
        disk_free=shutil.disk_usage(folder).free,
        cpu_bf16_speedup=hardware.cpu_bf16_speedup(),
    )
    try:
        import torch
    except ImportError:  # planning works without the train extra; the run itself needs it
        return hw
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        free, gpu_total = torch.cuda.mem_get_info(0)
        return dataclasses.replace(
            hw,
            device="cuda",
            device_name=props.name,
            gpu_total=int(gpu_total),
            gpu_free=int(free),
            compute_capability=f"{props.major}.{props.minor}",
            gpu_bf16=bool(torch.cuda.is_bf16_supported()),
            gpu_count=torch.cuda.device_count(),
        )
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return dataclasses.replace(hw, device="mps", device_name="Apple GPU (shares RAM)")
    return hw


def ram() -> tuple[int, int]:
    """(total, available) RAM in bytes, capped by a cgroup (container) memory limit when one is set."""
    try:
        import psutil

        vm = psutil.virtual_memory()
        total, available = int(vm.total), int(vm.available)
    except ImportError:
        total, available = _meminfo()
    limit = _cgroup_limit()
    if limit is not None:
        total, available = min(total, limit[0]), min(available, limit[0] - limit[1])
    return total, max(0, available)


def _meminfo() -> tuple[int, int]:
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        total = int(fields["MemTotal"].split()[0]) * 1024
        return total, int(fields.get("MemAvailable", fields["MemFree"]).split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        pass
    try:  # macOS and other POSIX systems without /proc: total only
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0, 0
    return total, total // 2  # no cheap "available" figure there: assume half is free


def _cgroup_limit() -> tuple[int, int] | None:
    """(limit, usage) of a cgroup v2 memory limit, or None when unlimited or unknown."""
    root = Path("/sys/fs/cgroup")
    try:
        raw = (root / "memory.max").read_text().strip()
        if raw == "max":
            return None
        return int(raw), int((root / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "CPU"
