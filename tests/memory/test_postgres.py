"""The memory store on a real PostgreSQL (a database of its own, dropped afterwards): migrations,
teach, recall, correct, forget, purge and the index repair work the same as on SQLite."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from finetuneflow.memory.config import MemoryConfig
from finetuneflow.memory.index import INDEX_FILE
from finetuneflow.memory.store import Memory
from memory.conftest import FACTS, HASH

SERVER = os.environ.get("FTF_TEST_POSTGRES", "host=127.0.0.1 port=5432 user=postgres dbname=test")


@pytest.fixture
def postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """FTF_DATABASE_URL pointing at a fresh database on the server (skipped when it is unreachable)."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (the dev extra has it)")
    try:
        admin = psycopg.connect(SERVER, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as err:
        pytest.skip(f"no PostgreSQL at {SERVER!r}: {err}")
    name = f"ftf_memory_{uuid.uuid4().hex[:8]}"
    admin.execute(f"CREATE DATABASE {name}")
    params = dict(p.split("=", 1) for p in SERVER.split())
    url = f"postgresql+psycopg://{params.get('user', 'postgres')}@{params['host']}:{params['port']}/{name}"
    monkeypatch.setenv("FTF_DATABASE_URL", url)
    try:
        yield url
    finally:
        from finetuneflow.state.db import _engine

        _engine(url).dispose()
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        admin.close()


def test_the_memory_store_on_postgres(postgres: str) -> None:
    memory = Memory("p", MemoryConfig(embedder=HASH))
    ids = [memory.teach(f, tags=["t"])["id"] for f in FACTS]
    fix = memory.correct("How long does the warranty last?", "The warranty lasts three years.")
    hits = [h["id"] for h in memory.recall("How long does the warranty last?")]
    assert hits.index(fix["id"]) < hits.index(ids[0])
    memory.forget(ids[2])
    assert memory.purge()["ids"] == [ids[2]]
    (memory.folder / INDEX_FILE).unlink()
    again = Memory("p", MemoryConfig(embedder=HASH))
    assert again.index.ids() == {ids[0], ids[1], fix["id"]}
    status = again.status()
    assert status["by_kind"] == {"fact": 2, "correction": 1} and status["index"]["ok"]
    assert [r["id"] for r in again.listing(tag="t")] == [
        fix["id"],
        ids[1],
        ids[0],
    ]  # a correction keeps the tags
