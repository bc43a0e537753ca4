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

While a run trains, jemalloc keeps the pages of freed memory for the next allocation
(:func:`keep_freed_pages`): by default it hands them back to the kernel within seconds, and a step
then faults tens of thousands of fresh pages in again (~50k a 512-token micro-batch, ~6% of it).
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


# jemalloc's decay time for freed ("dirty") pages: -1 = keep them until told otherwise
DECAY = "dirty_decay_ms"
ALL_ARENAS = 4096  # MALLCTL_ARENAS_ALL: "arena.4096.purge" purges every arena


class FreedPages:
    """The pages jemalloc keeps while :func:`keep_freed_pages` runs, held within a budget."""

    # Kept pages past the first step's level by this much are purged (see trim): at least this many
    # bytes, or this share of that level
    SLACK_BYTES, SLACK_SHARE = 256 * 1024**2, 0.1

    def __init__(self, mallctl: Any = None) -> None:
        self.mallctl = mallctl  # None: not jemalloc's, nothing kept, nothing to trim
        self.level: int | None = None  # dirty bytes at the first trim: one step's working set
        self.purges = 0

    def __bool__(self) -> bool:
        return self.mallctl is not None

    def dirty(self) -> int:
        """Bytes of freed pages jemalloc holds now (its statistics, refreshed)."""
        if self.mallctl is None:
            return 0
        epoch = ctypes.c_uint64(1)
        self.mallctl(b"epoch", None, None, ctypes.byref(epoch), ctypes.sizeof(epoch))
        pages = _read(self.mallctl, f"stats.arenas.{ALL_ARENAS}.pdirty".encode(), ctypes.c_size_t) or 0
        return int(pages) * (_read(self.mallctl, b"arenas.page", ctypes.c_size_t) or 4096)

    def trim(self) -> bool:
        """Between steps: purge the kept pages once they grow past the first step's level (plus
        the slack); whether it purged. Kept pages are not all reused: freed extents of one size
        do not always serve the next step's other sizes, and their number grew step by step
        (SmolLM2-135M, fp32, one row a micro-batch: 1.0 GiB kept after step 1, 3.0 after step
        6, the process's RSS 2.1 -> 4.0 GiB; with jemalloc's default decay 1.9 GiB throughout)."""
        if self.mallctl is None:
            return False
        dirty = self.dirty()
        if self.level is None:
            self.level = dirty
            return False
        if dirty <= self.level + max(self.SLACK_BYTES, self.SLACK_SHARE * self.level):
            return False
        self.mallctl(f"arena.{ALL_ARENAS}.purge".encode(), None, None, None, 0)
        self.purges += 1
        return True


@contextmanager
def keep_freed_pages() -> Iterator[FreedPages]:
    """While the block runs, jemalloc (when it is this process's malloc) keeps freed pages for
    reuse; afterwards every arena gets its decay time back and its unused pages are returned to the
    kernel. Yields a :class:`FreedPages`, false where it did not apply: not under glibc's malloc or
    another allocator, and not when ``MALLOC_CONF`` sets a decay itself (the user's tuning wins).
    Long work calls its ``trim()`` between steps, which bounds what is kept.

    Why: a training step frees and reallocates the same few hundred MB of activations over and
    over (the LM head's 16-33 MB logit buffers among them); jemalloc's default decay (10 s, purged
    a little at every allocation burst) returned ~200 MB of them to the kernel each 512-token
    micro-batch, which the next one faulted in again."""
    mallctl = _mallctl()
    if mallctl is None or DECAY in os.environ.get("MALLOC_CONF", ""):
        yield FreedPages()
        return
    default = f"arenas.{DECAY}".encode()  # what arenas created from now on start with
    before = {name: _read(mallctl, name, ctypes.c_ssize_t) for name in [*_arena_names(mallctl), default]}
    changed = {name: old for name, old in before.items() if old is not None and _write(mallctl, name, -1)}
    try:
        yield FreedPages(mallctl if changed else None)
    finally:  # arenas opened meanwhile (a new thread's) started with -1: they get the old default
        for name in dict.fromkeys([*changed, *_arena_names(mallctl)]):
            if (old := changed.get(name, changed.get(default))) is not None:
                _write(mallctl, name, old)
        mallctl(f"arena.{ALL_ARENAS}.purge".encode(), None, None, None, 0)


def _arena_names(mallctl: Any) -> list[bytes]:
    count = _read(mallctl, b"arenas.narenas", ctypes.c_uint) or 0
    return [f"arena.{i}.{DECAY}".encode() for i in range(count)]


def _mallctl() -> Any:
    """jemalloc's control function when jemalloc is this process's malloc, else None."""
    if not sys.platform.startswith("linux") or "jemalloc" not in os.path.basename(in_use()):
        return None
    try:
        function = ctypes.CDLL(None).mallctl  # preloaded: its symbols are the process's own
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


def _read(mallctl: Any, name: bytes, kind: Any) -> Any:
    value, size = kind(), ctypes.c_size_t(ctypes.sizeof(kind))
    if mallctl(name, ctypes.byref(value), ctypes.byref(size), None, 0) != 0:
        return None  # an arena index never initialised, or a name this jemalloc lacks
    return value.value


def _write(mallctl: Any, name: bytes, value: int) -> bool:
    new = ctypes.c_ssize_t(value)
    return bool(mallctl(name, None, None, ctypes.byref(new), ctypes.sizeof(new)) == 0)
