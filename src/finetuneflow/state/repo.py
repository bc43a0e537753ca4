"""Small query helpers over the state tables (kept here so steps stay free of SQL)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from finetuneflow import paths
from finetuneflow.state.schema import Project


def get_or_create_project(session: Session, name: str) -> Project:
    """The project called ``name``, created (with its folders) on first use."""
    paths.project_dir(name)
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        project = Project(name=name)
        session.add(project)
        session.flush()
    return project


def find_project(session: Session, name: str) -> Project:
    """The project called ``name``.

    Raises:
        LookupError: no such project (the message lists the known ones).
    """
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        known = session.scalars(select(Project.name)).all()
        raise LookupError(f"no project {name!r} (known: {', '.join(known) or 'none yet; run `ftf ingest`'})")
    return project
