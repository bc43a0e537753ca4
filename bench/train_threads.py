"""Both cores, quiet and busy: ``bench/train.py --scaling`` trains ours four times in one run, on
one thread and on the default (``threads=0``: the cores other processes leave free, re-checked as
the load changes, ``hardware.CoreShare``), each on the quiet machine and beside a second process
that keeps one core busy (a Python spin loop), and prints the ratios.

Targets (printed, never asserted; issue 16): default / one thread >= 1.7x quiet, and >= 1.0x busy
(never slower than one thread when another process holds a core).

Also printed, not judged: the machine's own two-core scaling for this step, two one-thread runs at
once in two processes (nothing shared: no GIL, no allocator, no barrier) over one alone. On the AMD
kind it moved 1.75-1.86x between minutes (``bench/results/train_threads_amd.txt`` run 9): the
default's quiet ratio is read against it.

Then the busy case where the other process is another training of ours: two runs with the default
threads at once against those two one-thread runs at once (target >= 1.0x for the slower of the two
defaults over the one-thread mean; each default sees the other in train/peers.py's registry).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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
    alone = run_child("ours", {**job, "threads": 1}, root, "alone-1")
    ones = at_once(run_child, {**job, "threads": 1}, root, "1")
    pair = sum(ones) / (alone["tokens"] / alone["seconds"])
    print(f"  alone-1        {alone['tokens'] / alone['seconds']:7.1f} real tok/s; at once: "
          f"{ones[0]:.1f} + {ones[1]:.1f}", flush=True)  # fmt: skip
    share = tps[("0", False)] / tps[("1", False)] / pair
    print(
        f"two one-thread runs at once, two processes (the machine's own scaling, not judged): "
        f"{pair:.2f}x one alone; the default's quiet ratio is {share:.0%} of it"
    )
    defaults = at_once(run_child, job | {"threads": 0}, root, "default")
    ratio = min(defaults) / (sum(ones) / 2)
    print(f"  at once, default threads in both: {defaults[0]:.1f} + {defaults[1]:.1f} real tok/s")
    verdict = "met" if ratio >= TARGET_BUSY else "NOT met"
    print(f"two of ours at once, default threads / 1 thread each (the slower default over the one-thread "
          f"mean): {ratio:.2f}x; target >= {TARGET_BUSY}x: {verdict}")  # fmt: skip


def at_once(
    run_child: Callable[..., dict[str, Any]], job: dict[str, Any], root: Path, name: str
) -> list[float]:
    """Real tokens/s of each of two copies of ``job`` run at once in two processes."""
    with ThreadPoolExecutor(2) as pool:  # the threads only wait on their subprocess
        pair = list(pool.map(lambda i: run_child("ours", job, root, f"pair-{name}-{i}"), range(2)))
    return [r["tokens"] / r["seconds"] for r in pair]
