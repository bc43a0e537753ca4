"""Deleting a run from the studio's Train step, and a project from its dashboard, in a real
headless chromium against ``ftf ui``: a dismissed confirmation keeps it; an accepted one removes its
row, its files and its record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from recorded import recorded_run

from finetuneflow import api, paths

from .conftest import Studio
from .test_browser import ready, shot

pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


def _open(chromium: Any) -> tuple[Any, Any, list[str]]:
    """A fresh context and page, and the page errors it collects."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    context.on("weberror", lambda err: errors.append(str(err.error)))
    return context, context.new_page(), errors


def test_a_run_is_deleted_from_the_train_step_after_a_confirmation(
    studio: Studio, chromium: Any, ftf_home: Path, shots: Path
) -> None:
    keep, drop = "20261206-100000-keep", "20261206-110000-drop"
    recorded_run("p", keep)
    recorded_run("p", drop)
    context, page, errors = _open(chromium)
    page.goto(studio.url + "/ui/projects/p/train")
    ready(page)
    rows = page.locator("#runs tbody tr")
    assert rows.count() == 2
    delete = page.get_by_role("button", name=f"Delete run {drop}")

    page.once("dialog", lambda dialog: dialog.dismiss())  # changed their mind: nothing happens
    delete.click()
    page.wait_for_timeout(300)
    assert rows.count() == 2 and sorted(r["id"] for r in api.list_runs("p")) == [keep, drop]

    page.once("dialog", lambda dialog: dialog.accept())
    delete.click()
    page.get_by_text(f"Run {drop} deleted").wait_for()
    assert rows.count() == 1 and page.locator(f"#runs tr[data-run='{keep}']").count() == 1
    shot(page, shots, "run-deleted")
    assert [r["id"] for r in api.list_runs("p")] == [keep]
    root = paths.project_dir("p")
    assert not (root / "runs" / drop).exists() and not (root / "exports" / f"{drop}.zip").exists()
    page.reload()
    ready(page)
    assert rows.count() == 1
    context.close()
    assert not errors, errors


def test_a_project_is_deleted_from_the_dashboard_after_a_confirmation(
    studio: Studio, chromium: Any, ftf_home: Path, shots: Path
) -> None:
    from finetuneflow.api import projects as papi

    recorded_run("keep", "20261206-100000-keep")
    recorded_run("drop", "20261206-110000-drop")
    context, page, errors = _open(chromium)
    page.goto(studio.url + "/")
    ready(page)
    rows = page.locator("tr[data-project]")
    assert rows.count() == 2
    delete = page.get_by_role("button", name="Delete project drop")

    page.once("dialog", lambda dialog: dialog.dismiss())
    delete.click()
    page.wait_for_timeout(300)
    assert rows.count() == 2 and [p["name"] for p in papi.list_projects()] == ["keep", "drop"]

    page.once("dialog", lambda dialog: dialog.accept())
    delete.click()
    page.get_by_text("Project drop deleted").wait_for()
    assert rows.count() == 1 and page.locator("tr[data-project='keep']").count() == 1
    shot(page, shots, "project-deleted")
    assert [p["name"] for p in papi.list_projects()] == ["keep"]
    assert not paths.project_path("drop").exists()
    page.reload()
    ready(page)
    assert rows.count() == 1
    context.close()
    assert not errors, errors
