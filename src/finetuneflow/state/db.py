"""Engine and sessions over the state database, migrated to the newest schema on open."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from finetuneflow import paths

MIGRATIONS = Path(__file__).parent / "migrations"


def database_url() -> str:
    """``FTF_DATABASE_URL`` if set (any SQLAlchemy URL), else SQLite in the state folder."""
    return os.environ.get("FTF_DATABASE_URL") or f"sqlite:///{paths.home() / 'ftf.db'}"


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (Alembic ``upgrade head``), one process
    at a time: a worker's processes (or `ftf ui` and its worker) opening a new database at once
    would both create its tables, and one would fail ('table already exists')."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    with _migration_lock():
        command.upgrade(cfg, "head")


@contextmanager
def _migration_lock() -> Iterator[None]:
    """An exclusive lock on ``$FTF_HOME/.migrate.lock`` (processes of one machine; none where
    ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    home = paths.home()
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".migrate.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_ENGINES: list[Engine] = []


@cache
def _engine(url: str) -> Engine:
    migrate(url)
    engine = create_engine(url)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    _ENGINES.append(engine)
    return engine


def _new_pools_after_fork() -> None:
    """A forked child (a Celery worker's pool process) must not talk over its parent's open
    connections: two processes on one socket garble the conversation (PostgreSQL answers
    'prepared statement "_pg3_0" already exists' and the job never runs). ``close=False`` leaves
    the parent's connections to the parent; the child opens its own."""
    for engine in _ENGINES:
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_new_pools_after_fork)


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    # WAL lets a reader (the web app, `ftf runs`) see progress while a step writes;
    # foreign keys are off by default in SQLite.
    cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def open_db() -> sessionmaker[Session]:
    """A session factory for the current state folder (migrating it first if needed)."""
    return sessionmaker(_engine(database_url()), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = open_db()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
