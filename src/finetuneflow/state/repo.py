"""Small query helpers over the state tables (kept here so steps stay free of SQL)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from finetuneflow import paths
from finetuneflow.state.schema import Project


def get_or_create_project(session: Session, name: str) -> Project:
    """The project called ``name``, created (with its folders) on first use.

    Raises:
        ValueError: a name that cannot be a folder, or one that differs from an existing project's
            only in case (on macOS and Windows the two would share one folder: a delete of one
            would take the other's files).
    """
    paths.check_project_name(name)
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        if twin := _case_twin(session, name):
            raise ValueError(
                f"project {twin!r} exists and {name!r} differs from it only in case: on macOS and "
                f"Windows the two would share one folder; use {twin!r} or another name"
            )
        project = Project(name=name)
        session.add(project)
        session.flush()
    paths.project_dir(name)
    return project


def _case_twin(session: Session, name: str) -> str | None:
    """An existing project's name equal to ``name`` but for case."""
    names = session.scalars(select(Project.name).where(func.lower(Project.name) == name.lower())).all()
    return next((n for n in names if n != name), None)


def find_project(session: Session, name: str) -> Project:
    """The project called ``name``.

    Raises:
        LookupError: no such project (the message lists the known ones).
    """
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        if twin := _case_twin(session, name):  # names are case-sensitive: say which one was meant
            raise LookupError(f"no project {name!r}; did you mean {twin!r}? (names are case-sensitive)")
        known = session.scalars(select(Project.name)).all()
        raise LookupError(f"no project {name!r} (known: {', '.join(known) or 'none yet; run `ftf ingest`'})")
    return project
