"""The embedded broker's queues, declared by processes that start at the same moment (``ftf
worker`` starts one per queue; the studio sends while they start): every one of them succeeds and
each queue has one row. kombu alone lets the loser of that race die with an IntegrityError."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
from pathlib import Path

from finetuneflow.jobs.app import declare_queues
from finetuneflow.jobs.config import JobsConfig

QUEUES = ("default", "train")


def _declare(url: str, start: mp.synchronize.Barrier, out: mp.Queue) -> None:  # type: ignore[type-arg]
    start.wait()
    try:
        declare_queues(JobsConfig(broker_url=url), QUEUES)
        out.put("ok")
    except Exception as err:  # reported to the test, which names it
        out.put(f"{type(err).__name__}: {err}")


def test_processes_starting_together_all_declare_the_queues(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")  # a fresh kombu (no shared engine or thread lock) per process
    for round_ in range(3):
        db = tmp_path / f"broker-{round_}.db"
        url = f"sqla+sqlite:///{db}"
        start, out = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_declare, args=(url, start, out)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        results = [out.get(timeout=5) for _ in procs]
        assert results == ["ok"] * 6, results
        with sqlite3.connect(db) as con:
            names = sorted(n for (n,) in con.execute("SELECT name FROM kombu_queue"))
        assert names == sorted(QUEUES)


def test_redis_needs_no_declaring() -> None:
    declare_queues(JobsConfig(broker_url="redis://127.0.0.1:1/0"), QUEUES)  # no connection is made
