"""Names that become folders: a project's or a dataset's that differs from an existing one only in
case is refused (on macOS and Windows the two would share one folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetuneflow import api, paths
from finetuneflow.api import projects
from finetuneflow.dataset.convert import DatasetConfig


def test_a_dataset_name_that_differs_only_in_case_is_refused(ftf_home: Path) -> None:
    projects.create_project("p")
    (paths.project_dir("p") / "datasets" / "default").mkdir()
    refused = {
        "build": lambda: api.build_dataset("p", DatasetConfig(name="Default")),
        "from chats": lambda: api.dataset_from_chats("p", "DEFAULT"),
    }
    for what, call in refused.items():
        with pytest.raises(ValueError, match="dataset 'default' exists in project 'p' and .* only in case"):
            call()
        assert [d["name"] for d in projects.list_datasets("p")] == ["default"], what
    assert api.dataset_from_chats("p", "default")["added"] == 0  # its own name still works


def test_a_project_name_that_differs_only_in_case_is_refused(ftf_home: Path) -> None:
    projects.create_project("demo")
    with pytest.raises(ValueError, match="project 'demo' exists and 'Demo' differs from it only in case"):
        projects.create_project("Demo")
    with pytest.raises(LookupError, match="did you mean 'demo'"):
        projects.show_project("DEMO")
    assert [p["name"] for p in projects.list_projects()] == ["demo"]
    assert sorted(p.name for p in (ftf_home / "projects").iterdir()) == ["demo"]
