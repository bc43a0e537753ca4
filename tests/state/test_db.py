from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from finetuneflow import paths
from finetuneflow.state import Project, session_scope
from finetuneflow.state.db import migrate
from finetuneflow.state.repo import find_project, get_or_create_project
from finetuneflow.state.schema import Base


def test_migrations_create_exactly_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate(url)
    insp = inspect(create_engine(url))
    tables = set(insp.get_table_names()) - {"alembic_version"}
    assert tables == {
        "projects",
        "files",
        "chunks",
        "examples",
        "llm_calls",
        "runs",
        "jobs",
        "job_events",
        "chat_exchanges",
        "memory_items",
    }
    for name, table in Base.metadata.tables.items():
        assert {c["name"] for c in insp.get_columns(name)} == {c.name for c in table.columns}, name


def test_state_lives_under_ftf_home(ftf_home: Path) -> None:
    with session_scope() as s:
        get_or_create_project(s, "p1")
    assert (ftf_home / "ftf.db").is_file()
    for sub in ("raw", "datasets", "runs", "exports"):
        assert (ftf_home / "projects" / "p1" / sub).is_dir()
    with session_scope() as s:
        assert isinstance(find_project(s, "p1"), Project)
        with pytest.raises(LookupError, match="known: p1"):
            find_project(s, "nope")


@pytest.mark.parametrize("bad", ["../x", "a/b", ".hidden", "", "x" * 65])
def test_project_names_cannot_escape(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid project name"):
        paths.project_dir(bad)


def _alembic(url: str) -> Any:
    from alembic.config import Config

    from finetuneflow.state.db import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def _head(url: str) -> str:
    """The newest revision (what opening a database migrates it to)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic(url)).get_current_head()
    assert head is not None
    return head


def test_run_kind_migration_keeps_existing_runs_as_causal(tmp_path: Path) -> None:
    from alembic import command

    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(_alembic(url), "0003")  # a database as the previous release left it
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO projects (id, name, created_at) VALUES (1, 'p', '2026-01-01')"))
        conn.execute(
            text(
                "INSERT INTO runs (id, project_id, dataset, base_model, status, path, config, summary, "
                "created_at) VALUES ('r1', 1, 'default', 'm', 'finished', '/x', '{}', '{}', '2026-01-01')"
            )
        )
    migrate(url)  # what opening the database does
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, kind FROM runs")).all() == [("r1", "causal")]
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == _head(url)
    command.downgrade(_alembic(url), "0003")  # and back, without losing the run
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id FROM runs")).all() == [("r1",)]
    assert "kind" not in {c["name"] for c in inspect(engine).get_columns("runs")}


def test_migrations_match_the_models_exactly(tmp_path: Path) -> None:
    """Columns, types, nullability and indexes: what Alembic's autogenerate would find to change."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate(url)
    with create_engine(url).connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_chat_exchanges_migration_adds_and_drops_only_its_table(tmp_path: Path) -> None:
    from alembic import command

    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(_alembic(url), "0004")  # a database as the release before chat left it
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO projects (id, name, created_at) VALUES (1, 'p', '2026-01-01')"))
    migrate(url)
    assert "chat_exchanges" in inspect(engine).get_table_names()
    command.downgrade(_alembic(url), "0004")
    assert "chat_exchanges" not in inspect(create_engine(url)).get_table_names()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM projects")).all() == [("p",)]


def _migrate_at_once(url: str, barrier: Any, errors: Any) -> None:
    from finetuneflow.state.db import migrate

    barrier.wait()
    try:
        migrate(url)
    except Exception as err:  # reported to the parent, which fails the test
        errors.put(f"{type(err).__name__}: {err}")


def test_processes_opening_a_new_database_at_once_migrate_it_one_at_a_time(tmp_path: Path) -> None:
    """`ftf ui` and its worker's processes open a new state database together: one creates the
    tables, the others find them (without the lock one failed with 'table ... already exists')."""
    import multiprocessing

    import alembic.command  # noqa: F401  (imported before the fork: the processes start level)

    ctx = multiprocessing.get_context("fork")
    barrier, errors = ctx.Barrier(4), ctx.Queue()
    url = f"sqlite:///{tmp_path / 'new.db'}"
    procs = [ctx.Process(target=_migrate_at_once, args=(url, barrier, errors)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert errors.empty(), errors.get()
