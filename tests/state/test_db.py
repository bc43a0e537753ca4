from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

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
    assert tables == {"projects", "files", "chunks", "examples", "llm_calls", "runs", "jobs"}
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
