"""Our other trainings on this machine: every CPU training holds a lock on a file of its own in a
folder each of our runs looks in, so a run can tell whether the core someone keeps busy is another
training of ours.

Why it matters: beside a busy core, a run with the default threads tries a step side by side and
one at a time and keeps the faster (``side_by_side.BusyChoice``). Two of our runs on two cores
each found one at a time the slower beside the other's side-by-side step, both kept side by side,
and each trained at 234-239 tokens/s against 256-258 when both ran one thread (README "Both cores",
Zen 4, 2026-12-07): a prisoner's dilemma. Knowing its neighbour is one of ours, a run takes the
way that is best for both: one micro-batch at a time on the cores the load leaves it.

A lock, not a PID file: the kernel releases it when the process ends however it ends (killed, out
of memory), so a dead run is never counted and a reused PID cannot pass for a live one. The file
is locked under a temporary name and then renamed, so a reader never finds one unlocked that is
still being set up. One folder per user (``0700``): another user's files cannot make our runs
slower. Where ``fcntl`` is missing (Windows) nothing is registered and no run is counted.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

ENV = "FTF_TRAINERS_DIR"  # where the lock files live (tests give each session its own)
SUFFIX = ".training"


def folder() -> Path:
    """``$FTF_TRAINERS_DIR``, else ``ftf-trainers-<uid>`` in the system's temporary folder: the
    cores are the machine's, so every project and state folder of this user shares it."""
    if value := os.environ.get(ENV):
        return Path(value)
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"ftf-trainers-{uid}"


class Trainings:
    """This process's registration; :meth:`others` counts the live trainings besides it."""

    def __init__(self, where: Path | None = None, register: bool = True) -> None:
        """``register`` False (a GPU training: it leaves the cores alone) makes a no-op."""
        self.folder = where or folder()
        self.path: Path | None = None
        self._fd: int | None = None
        if not register:
            return
        try:
            import fcntl
        except ImportError:  # no flock here: nothing registered, nobody counted
            return
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if self.folder.stat().st_uid != os.getuid():  # not ours (a shared /tmp): not trusted
                return
            name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
            pending = self.folder / f".{name}.tmp"
            fd = os.open(pending, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
        except OSError:  # a read-only or full temporary folder: train without knowing the others
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held until close() or the process ends
            pending.rename(self.folder / f"{name}{SUFFIX}")
        except OSError:
            os.close(fd)
            pending.unlink(missing_ok=True)
            return
        self._fd, self.path = fd, self.folder / f"{name}{SUFFIX}"

    def others(self) -> int:
        """Live trainings of ours other than this one; files whose process has ended are removed."""
        if self._fd is None:
            return 0
        import fcntl

        count = 0
        try:
            entries = list(self.folder.glob(f"*{SUFFIX}"))
        except OSError:
            return 0
        for path in entries:
            if path == self.path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:  # removed meanwhile
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # its holder is alive
                count += 1
            except OSError:
                pass
            else:  # nobody holds it: that training has ended
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        return count

    def close(self) -> None:
        """Leave the registry (the lock goes with the file descriptor)."""
        if self._fd is None:
            return
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> Trainings:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
