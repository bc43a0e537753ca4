"""``ftf train`` and ``ftf worker`` start again with jemalloc preloaded (finetuneflow/allocator.py);
``FTF_ALLOCATOR`` chooses, and a wrong value is a clear error. Real processes, real exec."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finetuneflow import allocator

JEMALLOC = allocator.find_jemalloc()
needs_jemalloc = pytest.mark.skipif(
    JEMALLOC is None or not sys.platform.startswith("linux"),
    reason="no jemalloc on this machine (Debian/Ubuntu: apt-get install libjemalloc2)",
)

# Runs the ftf console script's entry point as `ftf <args>` and prints the malloc in use at the end.
PROBE = """
import sys
sys.argv = ["ftf", *sys.argv[1:]]
from finetuneflow import allocator, cli
try:
    cli.main()
finally:
    print("MALLOC", allocator.in_use(), flush=True)
"""


def _ftf(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    ours = ("LD_PRELOAD", allocator.MARK, allocator.CHOICE)
    clean = {k: v for k, v in os.environ.items() if k not in ours}
    command = [sys.executable, "-c", PROBE, *args]
    return subprocess.run(command, env={**clean, **env}, capture_output=True, text=True, timeout=120)


def _malloc(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stdout.splitlines() if line.startswith("MALLOC ")]
    assert len(lines) == 1, done.stdout + done.stderr  # one process printed: it replaced itself once
    return lines[0].removeprefix("MALLOC ")


@needs_jemalloc
def test_train_and_worker_start_again_with_jemalloc() -> None:
    for command in ("train", "worker"):
        done = _ftf(command, "--help")
        assert done.returncode == 0, done.stderr
        assert "jemalloc" in os.path.basename(_malloc(done)), command


def test_other_commands_and_the_system_choice_keep_glibc_malloc() -> None:
    assert _malloc(_ftf("ingest", "--help")) == "system"
    assert _malloc(_ftf("train", "--help", FTF_ALLOCATOR="system")) == "system"


def test_a_wrong_choice_is_a_clear_error_before_anything_runs() -> None:
    done = _ftf("train", "--help", FTF_ALLOCATOR="tcmalloc-please")
    assert done.returncode == 2
    assert "FTF_ALLOCATOR='tcmalloc-please'" in done.stderr and "'system'" in done.stderr
    assert "Usage" not in done.stdout  # the command itself never ran


@needs_jemalloc
def test_a_library_path_is_preloaded_as_given_and_never_twice() -> None:
    assert JEMALLOC is not None
    done = _ftf("train", "--help", FTF_ALLOCATOR=JEMALLOC)
    assert os.path.samefile(_malloc(done), JEMALLOC)
    env = allocator.preload_env({"FTF_ALLOCATOR": JEMALLOC, "LD_PRELOAD": "/opt/x/libfoo.so"})
    assert env is not None and env["LD_PRELOAD"] == f"{JEMALLOC}:/opt/x/libfoo.so"
    assert allocator.preload_env({"LD_PRELOAD": JEMALLOC}) is None  # already there: nothing to add
    assert allocator.preload_env({"FTF_ALLOCATOR": "system"}) is None


def test_find_jemalloc_looks_only_where_it_is_told(tmp_path: Path) -> None:
    assert allocator.find_jemalloc(dirs=(str(tmp_path),)) in (None, *_prefix_copies())
    (tmp_path / "libjemalloc.so.2").write_bytes(b"")
    found = allocator.find_jemalloc(dirs=(str(tmp_path),))
    assert found is not None and (found == str(tmp_path / "libjemalloc.so.2") or found in _prefix_copies())


def _prefix_copies() -> tuple[str, ...]:
    """A jemalloc inside this interpreter's own prefix (a conda environment) comes first."""
    copies = (Path(sys.prefix, "lib", name) for name in allocator.JEMALLOC)
    return tuple(str(path) for path in copies if path.is_file())


# Prints jemalloc's decay time for freed pages (new arenas', arena 0's) before, inside and after
# keep_freed_pages(), and whether it applied.
DECAY_PROBE = """
import ctypes
import json
import threading
from finetuneflow import allocator
control = allocator._mallctl()
def decay():
    if control is None:
        return None
    names = (b"arenas.dirty_decay_ms", b"arena.0.dirty_decay_ms")
    return [allocator._read(control, name, ctypes.c_ssize_t) for name in names]
before = decay()
def churn():
    blocks = [bytearray(32 << 20) for _ in range(4)]  # 128 MB used and freed while pages are kept
    del blocks
with allocator.keep_freed_pages() as applied:
    inside = decay()
    churn()
    threads = [threading.Thread(target=churn) for _ in range(6)]  # threads may open new arenas
    [thread.start() for thread in threads]
    [thread.join() for thread in threads]
names = allocator._arena_names(control) if control else []
every = [allocator._read(control, name, ctypes.c_ssize_t) for name in names]
print("DECAY", json.dumps([before, inside, decay(), bool(applied)]))
print("ARENAS", json.dumps([value for value in every if value is not None]))
"""


def _decay(**env: str) -> list[object]:
    clean = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    done = subprocess.run([sys.executable, "-c", DECAY_PROBE], env={**clean, **env}, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = [line for line in done.stdout.splitlines() if line.startswith(("DECAY ", "ARENAS "))]
    lines = dict(line.split(" ", 1) for line in printed)
    arenas = json.loads(lines["ARENAS"])
    assert -1 not in arenas, arenas  # no arena, old or opened meanwhile, keeps pages afterwards
    return list(json.loads(lines["DECAY"]))


@needs_jemalloc
def test_jemalloc_keeps_freed_pages_while_training_and_gets_its_decay_back() -> None:
    assert JEMALLOC is not None
    before, inside, after, applied = _decay(LD_PRELOAD=JEMALLOC)
    assert isinstance(before, list) and -1 not in before  # jemalloc's own decay (10 s by default)
    assert inside == [-1, -1] and after == before and applied is True


@needs_jemalloc
def test_a_users_malloc_conf_decay_is_left_alone() -> None:
    assert JEMALLOC is not None
    assert _decay(LD_PRELOAD=JEMALLOC, MALLOC_CONF="dirty_decay_ms:2500") == [[2500, 2500]] * 3 + [False]


def test_keep_freed_pages_does_nothing_under_glibc_malloc() -> None:
    assert _decay() == [None, None, None, False]


# Kept pages within a budget: a first "step" sets the level, later ones of other sizes grow what is
# kept (as a training run's micro-batches of other lengths did: 1.0 -> 3.0 GiB in 6 steps), and the
# trim between steps purges it.
TRIM_PROBE = """
import json
from finetuneflow import allocator
with allocator.keep_freed_pages() as pages:
    blocks = [bytearray(16 << 20) for _ in range(8)]
    del blocks
    first = pages.trim()
    level = pages.dirty()
    still = pages.trim()  # nothing grew: kept
    blocks = [bytearray((17 + i) << 20) for i in range(24)]
    del blocks
    grown = pages.dirty()
    purged = pages.trim()
    after = pages.dirty()
print("TRIM", json.dumps([bool(pages), first, still, level, grown, purged, after]))
"""


def _trim(**env: str) -> list[object]:
    clean = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    done = subprocess.run([sys.executable, "-c", TRIM_PROBE], env={**clean, **env}, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("TRIM "))
    return list(json.loads(line.split(" ", 1)[1]))


@needs_jemalloc
def test_kept_pages_past_the_first_steps_level_are_purged_between_steps() -> None:
    applied, first, still, level, grown, purged, after = _trim(LD_PRELOAD=JEMALLOC)
    assert applied and not first and not still  # the first trim only measures; no growth, no purge
    assert isinstance(level, int) and isinstance(grown, int) and isinstance(after, int)
    assert level >= 64 << 20 and grown > level + (256 << 20)  # the pages were kept, and grew
    assert purged and after < level  # handed back


def test_trim_does_nothing_under_glibc_malloc() -> None:
    assert _trim() == [False, False, False, 0, 0, False, 0]
