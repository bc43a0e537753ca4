"""The C allocator under training: jemalloc when the machine has it, glibc's malloc otherwise.

A CPU training step frees and allocates tens of thousands of activation tensors of a few hundred
KB to a few MB. glibc's malloc serves them from its heap and spends its time sorting and merging
freed chunks (``perf`` on a SmolLM2-135M LoRA step: ``_int_malloc`` and its helpers ~6-7% of the
step); jemalloc's size classes do not (README "Training speed on a CPU" has the measurement).
Intel's and AMD's CPU tuning guides and PyTorch's own CPU launcher preload jemalloc or tcmalloc
for the same reason.

An allocator can only be chosen when a process starts (``LD_PRELOAD``), so ``ftf train`` and
``ftf worker`` start themselves again with it, once, before anything else runs (:func:`reexec`).
``FTF_ALLOCATOR`` chooses: ``auto`` (the default: jemalloc when found), ``system`` (never preload)
or the path of a malloc library (``.so``: tcmalloc, mimalloc) to preload instead. The Python API
runs in its caller's process: start that process with ``LD_PRELOAD`` to get the same.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

CHOICE = "FTF_ALLOCATOR"  # auto | system | /path/to/libsomemalloc.so
MARK = "FTF_ALLOCATOR_PRELOADED"  # set on the re-executed process: never start a third time
JEMALLOC = ("libjemalloc.so.2", "libjemalloc.so")
KNOWN = ("jemalloc", "tcmalloc", "mimalloc")  # allocators that, when mapped, count as chosen
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
                "/usr/local/lib", "/usr/local/lib64")  # fmt: skip


def choice(env: Mapping[str, str] | None = None) -> str:
    """``FTF_ALLOCATOR``, checked: ``auto``, ``system`` or the path of an existing library.

    Raises ValueError naming the variable and the accepted values."""
    value = (os.environ if env is None else env).get(CHOICE, "").strip() or "auto"
    library = value.endswith(".so") or ".so." in value
    if value in ("auto", "system") or (library and Path(value).is_file()):
        return value
    raise ValueError(
        f"{CHOICE}={value!r}: expected 'auto' (jemalloc when found), 'system' (glibc's malloc) "
        "or the path of an existing malloc library such as /usr/lib/x86_64-linux-gnu/libtcmalloc.so.4"
    )


def find_jemalloc(dirs: tuple[str, ...] = LIBRARY_DIRS) -> str | None:
    """The path of jemalloc's shared library on this machine (a prefix's own ``lib`` first), or
    None. Debian and Ubuntu: ``apt-get install libjemalloc2``."""
    for folder in (os.path.join(sys.prefix, "lib"), *dirs):
        for name in JEMALLOC:
            if os.path.isfile(path := os.path.join(folder, name)):
                return path
    return None


def in_use() -> str:
    """The malloc library mapped into this process (its path), or ``system``."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux
        return "system"
    for line in maps.splitlines():
        path = line.rsplit(" ", 1)[-1]
        if any(name in os.path.basename(path) for name in KNOWN):
            return path
    return "system"


def preload_env(env: Mapping[str, str]) -> dict[str, str] | None:
    """``env`` with the chosen allocator in ``LD_PRELOAD``, or None when there is nothing to add:
    not Linux, ``FTF_ALLOCATOR=system``, no jemalloc here, or an allocator already preloaded."""
    wanted = choice(env)
    preloaded = env.get("LD_PRELOAD", "")
    if not sys.platform.startswith("linux") or wanted == "system" or any(n in preloaded for n in KNOWN):
        return None
    library = find_jemalloc() if wanted == "auto" else wanted
    if library is None:
        return None
    return {**env, "LD_PRELOAD": f"{library}:{preloaded}" if preloaded else library, MARK: library}


def reexec() -> None:
    """Start this process again, same interpreter and arguments, with the chosen allocator
    preloaded; returns (and the process goes on with glibc's malloc) when there is none to add, when
    it is already in use, or when this process is the one started again (a library that failed to
    preload never loops)."""
    if os.environ.get(MARK) or in_use() != "system":
        return
    env = preload_env(os.environ)
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:  # orig_argv: the interpreter's own flags (-X, -W, -u under torchrun) start again too
        os.execve(sys.executable, sys.orig_argv, env)
    except OSError:  # exec refused (a sandbox, a vanished interpreter): keep going as we are
        return
