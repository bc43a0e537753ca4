"""Deleting what a project holds without losing it halfway (a run, or the whole project).

Each path is first renamed beside itself (``.deleting-<name>``: the same folder, so the same file
system, and a name no project or run can take), then the rows go, then the renamed paths: an error
before the rows are gone renames them back. A delete killed in that window (the rows' delete and
commit: the files are measured after it) is finished by the next delete of the same run or
project, which finds its ``.deleting-`` paths (:func:`_tidy`); until then the run or project is
listed without its files. One killed after the commit leaves ``.deleting-`` paths whose row is
gone: the next listing of the projects (or of the project's runs) removes them (:func:`sweep`)
once they have been aside for ``SWEEP_AFTER_S``. Nothing is deleted
while a job uses it: a queued job, or a running one whose process still beats, refuses the delete;
a running one that stopped beating is marked lost first, so that no reaper sends it again to write
back what is being deleted.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from finetuneflow.state import jobs

# A running job whose heartbeat is older than this is taken for dead (jobs beat every 10 s; a
# worker's own setting may be slower, hence the margin).
LIVE_HEARTBEAT_S = 120.0

PREFIX = ".deleting-"

# A ``.deleting-`` path is swept only once it has been aside this long (its ctime: the rename set
# it). A delete commits within seconds of its rename; a path renamed just now whose row a
# listing did not see may belong to a project made and deleted again in between, whose commit
# could still fail and need it back.
SWEEP_AFTER_S = 600.0


def refuse_if_used(project_id: int, what: str, error: type[Exception], run_id: str | None = None) -> None:
    """Raise ``error`` naming the first live job of the project (of run ``run_id`` when given);
    mark the dead ones lost."""
    live, dead = jobs.unfinished(project_id, LIVE_HEARTBEAT_S, run_id)
    # a dead job that beat again since it was read is live after all: mark_lost leaves it running
    live += [job for job in dead if not jobs.mark_lost(job["id"], LIVE_HEARTBEAT_S, job["attempts"])]
    if live:
        job = live[0]
        raise error(
            f"{what} is in use by job {job['id']} ({job['step']}, {job['status']}); "
            f"wait for it to end or cancel it with `ftf jobs cancel {job['id']}`"
        )


@contextmanager
def deleting(
    project_id: int,
    what: str,
    error: type[Exception],
    pairs: list[tuple[Path, Path]],
    run_id: str | None = None,
) -> Iterator[dict[str, int]]:
    """:func:`refuse_if_used`, then :func:`set_aside` of ``pairs`` around the body (which deletes
    the rows), checking the jobs again once the paths are aside: a job queued while they moved
    puts them back. One queued after that finds no project (the database refuses the job's row)
    or no run (its step fails with "no run"), never half a deletion. Yields what set_aside does."""
    refuse_if_used(project_id, what, error, run_id)
    with set_aside(pairs) as freed:
        refuse_if_used(project_id, what, error, run_id)
        yield freed


def beside(path: Path) -> tuple[Path, Path]:
    """(``path``, where a delete renames it)."""
    return path, path.with_name(f"{PREFIX}{path.name}")


def sweep(folder: Path, names: Callable[[], set[str]]) -> int:
    """Remove what deletes killed after their commit left in ``folder``: each ``.deleting-<name>``
    aside for ``SWEEP_AFTER_S`` or more whose ``<name>`` is not in ``names()`` (the rows still
    standing, read after the folder was listed). Returns how many paths went; what cannot be read
    or removed stays for the next sweep."""
    try:
        leftovers = [p for p in folder.iterdir() if p.name.startswith(PREFIX)]
    except OSError:
        return 0
    if not leftovers:
        return 0
    standing, cutoff = names(), time.time() - SWEEP_AFTER_S
    swept = 0
    for aside in leftovers:
        try:
            old = aside.lstat().st_ctime <= cutoff
        except OSError:
            continue
        if old and aside.name[len(PREFIX) :] not in standing:
            _remove(aside)
            swept += 1
    return swept


@contextmanager
def set_aside(pairs: list[tuple[Path, Path]]) -> Iterator[dict[str, int]]:
    """Rename each existing path of ``pairs`` (path, aside) to its aside, then run the body (which
    deletes the rows): if the body fails, everything moves back; if it succeeds, the asides are
    measured (the yielded dict's ``bytes``, filled after the body: no walk of the files while the
    rows' transaction is open) and removed."""
    moved: list[tuple[Path, Path]] = []
    freed = {"bytes": 0}
    try:
        for path, aside in pairs:
            _tidy(path, aside)
            if path.exists() or path.is_symlink():
                moved.append((path, path.rename(aside)))
        yield freed
    except BaseException:
        for path, aside in reversed(moved):  # the rows stay: so do their files
            aside.rename(path)
        raise
    freed["bytes"] = sum(size(aside) for _, aside in moved)
    for _, aside in moved:
        _remove(aside)


def size(path: Path) -> int:
    """Bytes in a file or a folder (links counted as themselves, never followed); what cannot be
    read counts 0 (the delete is done by then: the count is a report)."""
    try:
        if path.is_symlink() or path.is_file():
            return path.lstat().st_size
        return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    except OSError:
        return 0


def _tidy(path: Path, aside: Path) -> None:
    """What an earlier, killed delete left: moved back while the row stands, else removed."""
    if aside.exists() or aside.is_symlink():
        if path.exists() or path.is_symlink():
            _remove(aside)
        else:
            aside.rename(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
