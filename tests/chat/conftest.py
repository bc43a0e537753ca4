"""A project holding the session's tiny tuned run as its newest finished run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from chat.helpers import PROJECT, RUN
from finetuneflow import paths


@pytest.fixture
def chat_project(tiny_tuned_run: Path, ftf_home: Path) -> str:
    """Project ``p`` whose newest finished causal run is a copy of the tiny tuned run."""
    from finetuneflow.api._common import finish_run, record_run
    from finetuneflow.state import session_scope
    from finetuneflow.state.repo import get_or_create_project

    with session_scope() as s:
        pid = get_or_create_project(s, PROJECT).id
    folder = paths.project_dir(PROJECT) / "runs" / RUN
    shutil.copytree(tiny_tuned_run, folder, ignore=shutil.ignore_patterns("checkpoints"))
    record_run(pid, RUN, folder, "causal", "default", "tiny", {})
    finish_run(RUN, "finished", {})
    return PROJECT
