"""Both cores, quiet and busy: ``bench/train.py --scaling`` trains ours four times in one run, on
one thread and on the default (``threads=0``: the cores other processes leave free, re-checked as
the load changes, ``hardware.CoreShare``), each on the quiet machine and beside a second process
that keeps one core busy (a Python spin loop), and prints the ratios.

Targets (printed, never asserted; issue 16): default / one thread >= 1.7x quiet, and >= 1.0x busy
(never slower than one thread when another process holds a core).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TARGET_QUIET, TARGET_BUSY = 1.7, 1.0


@contextmanager
def busy_core(on: bool) -> Iterator[None]:
    """A second process spinning on one core while the body runs (when ``on``)."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if on else None
    try:
        yield
    finally:
        if spinner:
            spinner.kill()
            spinner.wait()


def scaling(run_child: Callable[..., dict[str, Any]], job: dict[str, Any], root: Path) -> None:
    """Ours on 1 thread and on the default, quiet and busy; tokens/s and the two ratios."""
    tps: dict[tuple[str, bool], float] = {}
    for busy in (False, True):
        for threads in (1, 0):
            name = f"{'busy' if busy else 'quiet'}-{threads or 'default'}"
            with busy_core(busy):
                r = run_child("ours", {**job, "threads": threads}, root, name)
            tps[(str(threads), busy)] = r["tokens"] / r["seconds"]
            speed = f"{tps[(str(threads), busy)]:7.1f} real tok/s, peak RSS {r['peak_rss'] / 1024**3:.2f} GiB"
            print(f"  {name:<14} {speed}  ({r['note']})", flush=True)
    for busy, target in ((False, TARGET_QUIET), (True, TARGET_BUSY)):
        ratio = tps[("0", busy)] / tps[("1", busy)]
        verdict = "met" if ratio >= target else "NOT met"
        print(f"default threads / 1 thread, {'busy' if busy else 'quiet'}: {ratio:.2f}x; "
              f"target >= {target}x: {verdict}")  # fmt: skip
