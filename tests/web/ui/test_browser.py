"""The studio in a real browser: headless Debian chromium (Playwright) against ``ftf ui`` (uvicorn and
its own worker on the embedded broker), the tiny model and the scripted LLM server. One project goes
through every wizard step; the page is closed mid-training and reopened, and must re-attach.
Screenshots of each step are written to ``tests/web/ui/artifacts/``."""

from __future__ import annotations

import os
import re
import stat
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from conftest import QUICKSTART
from dataset.teacher import teacher
from llm_server import ScriptedServer

from finetuneflow.state import jobs as log
from finetuneflow.state import runs as rf

from .conftest import Studio, pause, resume, worker_of

PlaywrightError = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").Error

KEY = "sk-test-studio-NEVER-SHOWN-7731"
UNLABELLED = """[...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
  .filter((el) => el.type === 'submit' || el.tagName === 'BUTTON'
    ? !el.textContent.trim() && !el.getAttribute('aria-label')
    : !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
  .map((el) => el.outerHTML.slice(0, 80))"""
JOB_S = 240  # the longest a step's job may take on a loaded 2-core box


def wait_job(page: Any, studio: Studio, timeout: float = JOB_S) -> str:
    """Wait until the page's job panel says the job is done (the page reloads itself then)."""
    status = page.locator("[data-job-field=status]")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if studio.proc.poll() is not None:
            pytest.fail(f"ftf ui exited\n{studio.tail()}")
        try:
            text = status.inner_text(timeout=10_000).strip() if status.count() else ""
        except PlaywrightError:  # the page is reloading: read the new one next round
            text = ""
        if text in ("finished", "failed", "cancelled"):
            return text
        time.sleep(0.3)
    pytest.fail(f"job still {status.inner_text()!r} after {timeout} s\n{studio.tail()}")


def finished(page: Any, studio: Studio, button: Any) -> None:
    """Click ``button`` (which queues a job), follow the page to that job, wait until it finished."""
    before = page.url
    button.click()
    page.wait_for_url(lambda url: "job=" in url and url != before)
    assert wait_job(page, studio) == "finished", page.locator("[data-job-field=error]").inner_text()
    reloaded(page)


def reloaded(page: Any) -> None:
    """The page reloads itself when its job is done, to draw the results: wait for that version."""
    page.locator("[data-job-panel][data-job-status=finished]").wait_for(timeout=30_000)
    ready(page)


def ready(page: Any) -> None:
    """Wait until the page's script has wired its actions (a click before that would be lost)."""
    page.wait_for_load_state("load")
    page.locator("html[data-ready]").wait_for(state="attached")


def steps_logged(run: Path) -> int:
    """Training steps in the run's metrics log (its eval lines have no ``loss``)."""
    return sum("loss" in m for m in rf.read_metrics(run))


def step(page: Any, name: str) -> None:
    page.get_by_role("link", name=f"Next: {name}").click()
    page.wait_for_url(f"**/{name.lower()}")
    ready(page)


def shot(page: Any, shots: Path, name: str) -> None:
    """Keep a screenshot of the step; check on the way that it fits 1280 px and labels every control."""
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280, f"{name}: wider than 1280 px"
    unlabelled = page.evaluate(UNLABELLED)
    assert not unlabelled, f"{name}: controls without a label: {unlabelled}"


def test_the_wizard_end_to_end(
    studio: Studio, chromium: Any, tiny_model: Path, ftf_home: Path, shots: Path
) -> None:
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    errors: list[str] = []
    context.on("weberror", lambda err: errors.append(str(err.error)))
    try:
        _wizard(context, studio, tiny_model, ftf_home, shots)
    except BaseException:
        for page in context.pages:  # what the page showed when it failed
            page.screenshot(path=str(shots / "failure.png"), full_page=True)
        raise
    assert not errors, errors


def _wizard(context: Any, studio: Studio, tiny_model: Path, ftf_home: Path, shots: Path) -> None:
    page = context.new_page()
    project = "studio"

    # Dashboard: create a project
    page.goto(studio.url + "/")
    ready(page)
    page.get_by_label("New project name").fill(project)
    page.get_by_label("New project name").press("Enter")  # the keyboard submits as the button does
    page.wait_for_url(f"**/ui/projects/{project}/model")
    ready(page)
    shot(page, shots, "01-model")

    # Model: a local folder (the tiny model)
    page.get_by_label("A local Hugging Face folder").check()
    page.get_by_label("Folder path").fill(str(tiny_model))
    page.get_by_role("button", name="Save model").click()
    page.get_by_text("Model saved.").wait_for()
    page.reload()
    ready(page)
    assert page.locator("[data-field=model]").inner_text() == str(tiny_model)

    # Task: the style goal (a random tiny model cannot learn facts), small chunks
    step(page, "Task")
    page.get_by_label("Style: learn").check()
    page.get_by_label("Largest chunk when reading documents (tokens)").fill("128")
    page.get_by_role("button", name="Save task").click()
    page.get_by_text("Saved.").wait_for()
    shot(page, shots, "02-task")

    # Data: upload the sample files, ingest, build
    step(page, "Data")
    files = sorted(p for p in (QUICKSTART / "data").iterdir() if p.is_file())
    page.get_by_label("Files to upload").set_input_files([str(p) for p in files])
    page.get_by_role("button", name="Upload files", exact=True).click()
    page.locator("#uploaded li", has_text="handbook.md").wait_for()
    assert page.locator("#uploaded li").count() == len(files)
    finished(page, studio, page.get_by_role("button", name="Read the uploaded files (ingest)"))
    report = page.locator("#ingest-report tbody tr")
    assert report.count() == len(files)
    assert "ingested" in page.locator("#ingest-report").inner_text()
    finished(page, studio, page.get_by_role("button", name="Build the dataset"))
    shot(page, shots, "03-data")

    # Preview: generation through the scripted server, with a key that is never shown again
    with ScriptedServer(teacher) as llm:
        step(page, "Preview")
        page.get_by_label("Provider kind").select_option("custom")
        page.get_by_label("Base URL (ending in /v1)").fill(llm.url)
        page.get_by_label("Model", exact=True).fill("test-model")
        page.get_by_label("API key", exact=False).fill(KEY)
        finished(page, studio, page.get_by_role("button", name="Preview generation"))
        assert llm.chat_requests and all(
            r.headers.get("authorization") == f"Bearer {KEY}" for r in llm.chat_requests
        )
    assert page.locator("#generated tbody tr").count() >= 1
    assert KEY not in page.content() and page.get_by_label("API key", exact=False).input_value() == ""
    key_file = ftf_home / "projects" / project / "provider.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    shot(page, shots, "04-preview")

    # Review: edit, approve, rate and delete examples; they stay so after a reload; rebuild
    step(page, "Review")
    rows = page.locator("#examples tbody tr")
    assert rows.count() >= 3
    first, second, third = (rows.nth(i).get_attribute("data-example") for i in range(3))
    edited = page.locator(f"tr[data-example='{first}'] textarea").last
    edited.fill("An answer a reviewer wrote.")
    page.locator(f"tr[data-example='{first}']").get_by_role("button", name="Save").click()
    page.get_by_text(f"Example {first} saved.").wait_for()
    page.locator(f"tr[data-example='{second}']").get_by_role("button", name="Approve").click()
    page.get_by_text(f"Example {second} approved.").wait_for()
    page.locator(f"tr[data-example='{second}'] select").select_option("5")
    page.get_by_text(f"Example {second} rated 5.").wait_for()
    page.locator(f"tr[data-example='{third}']").get_by_role("button", name="Delete").click()
    page.get_by_text(f"Example {third} deleted.").wait_for()
    page.reload()
    ready(page)
    assert (
        page.locator(f"tr[data-example='{first}'] textarea").last.input_value()
        == "An answer a reviewer wrote."
    )
    assert "approved" in page.locator(f"tr[data-example='{second}'] [data-field=status]").inner_text()
    assert page.locator(f"tr[data-example='{second}'] select").input_value() == "5"
    assert page.locator(f"tr[data-example='{third}']").count() == 0
    shot(page, shots, "05-review")
    # the deleted example is listed apart, and restored from there
    page.get_by_label("Status", exact=True).select_option("deleted")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**status=deleted*")
    ready(page)
    assert page.locator("#examples tbody tr").count() == 1
    page.locator(f"tr[data-example='{third}']").get_by_role("button", name="Restore").click()
    page.get_by_text(f"Example {third} restored").wait_for()
    assert page.locator(f"tr[data-example='{third}']").count() == 0
    shot(page, shots, "05b-review-restored")
    page.goto(page.url.replace("status=deleted", "status="))
    ready(page)
    assert page.locator(f"tr[data-example='{third}']").count() == 1
    finished(page, studio, page.get_by_role("button", name="Rebuild the dataset with these examples"))

    _train_evaluate_export(page, context, studio, shots, project, ftf_home)


def _train_evaluate_export(
    page: Any, context: Any, studio: Studio, shots: Path, project: str, home: Path
) -> None:
    # Hardware: ask for QLoRA (no CUDA here), a short run; the plan's change is applied by one click
    step(page, "Hardware")
    page.get_by_label("Method").select_option("qlora")
    page.get_by_label("Max optimizer steps").fill("40")
    page.get_by_label("Tokens per packed row").fill("128")
    page.get_by_label("Learning rate").fill("0.003")
    page.get_by_role("button", name="Save training settings").click()
    page.get_by_text("Training settings saved.").wait_for()
    assert '"max_steps": 40' in page.locator("#train-config").inner_text()
    page.get_by_role("button", name="Check this machine").click()
    plan_or_error = "document.querySelector('#plan .reasons li') || !document.getElementById('alert').hidden"
    page.wait_for_function(plan_or_error, timeout=120_000)
    assert page.locator("#alert.error:not([hidden])").count() == 0, page.locator("#alert").inner_text()
    assert "qlora -> lora" in page.locator("#plan").inner_text()
    page.get_by_role("button", name="Apply the recommended changes").click()
    page.get_by_text("Recommended changes applied").wait_for()
    assert '"method": "lora"' in page.locator("#train-config").inner_text()
    shot(page, shots, "06-hardware")
    page.reload()
    ready(page)
    assert page.get_by_label("Method").input_value() == "lora"

    # Train: the live chart gets points; close the page mid-run, reopen, it re-attaches. The worker
    # trains only while the test lets it (SIGSTOP/SIGCONT, between database writes): the tiny model
    # runs its 40 steps in seconds on a fast CPU, faster than a loaded browser reopens a page and
    # clicks Stop (a CI run had finished before its Stop was seen; the job "finished")
    step(page, "Train")
    page.get_by_role("button", name="Start training").click()
    page.wait_for_url("**job=*")
    job_url = page.url
    job_id = int(job_url.split("job=")[1].split("&")[0])
    run = home / "projects" / project / "runs" / job_url.split("run=")[1].split("&")[0]
    worker, database = worker_of(studio), home / "ftf.db"
    chart = page.locator("#loss-chart")
    page.wait_for_function("document.getElementById('loss-chart').dataset.count >= 3", timeout=JOB_S * 1000)
    pause(worker, database)
    try:
        seen = int(chart.get_attribute("data-count") or 0)
        logged = steps_logged(run)
        assert logged < 30, f"the run was at step {logged} of 40 before the test could pause it"
        shot(page, shots, "07-train-live")
        page.close()

        page = context.new_page()
        page.goto(studio.url + f"/ui/projects/{project}/train")  # no job in the URL: the newest train job
        ready(page)
        assert page.locator("[data-job-panel]").get_attribute("data-job-id") == str(job_id)
        assert page.locator("[data-job-field=status]").inner_text().strip() == "running"
        # new points while the page is open, up to past the first checkpoint (one at each of the ~5
        # evals: step 8, 16, ...); its progress events may trail its metrics by a step
        resume(worker)
        deadline = time.monotonic() + JOB_S
        while steps_logged(run) < max(10, logged + 2) and time.monotonic() < deadline:
            time.sleep(0.02)
        pause(worker, database)
        count = "document.getElementById('loss-chart').dataset.count"
        page.wait_for_function(f"{count} > {seen} && {count} >= 8", timeout=30_000)
        shot(page, shots, "08-train-reattached")

        # Stop, then resume the run from its checkpoint
        assert log.get(job_id)["status"] == "running"
        page.get_by_role("button", name="Stop", exact=True).click()
        deadline = time.monotonic() + 30
        while not log.get(job_id)["cancel_requested"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert log.get(job_id)["cancel_requested"], "Stop was clicked but no cancel was recorded"
    finally:
        resume(worker)
    assert wait_job(page, studio) == "cancelled"
    page.locator("[data-job-panel][data-job-status=cancelled]").wait_for(timeout=30_000)
    ready(page)
    shot(page, shots, "09-train-stopped")
    finished(page, studio, page.get_by_role("button", name=re.compile(r"^Resume run ")))
    assert int(page.locator("#loss-chart").get_attribute("data-count") or 0) == 40  # one run, all its steps
    assert page.locator("#loss-chart text.step").all_text_contents() == ["0", "10", "20", "30", "40"]
    assert page.locator("#runs tbody tr").count() == 1 and "finished" in page.locator("#runs").inner_text()
    # the figures are the run's last step, not those of an older job's events replayed over them
    assert page.locator("[data-stat=step]").inner_text().strip() == "40"
    shot(page, shots, "10-train-done")

    # Evaluate: base vs tuned
    step(page, "Evaluate")
    page.get_by_label("Questions per set").fill("2")
    finished(page, studio, page.get_by_role("button", name="Evaluate run"))
    assert page.locator("#losses tbody tr").count() >= 1 and page.locator("#means tbody tr").count() >= 1
    shot(page, shots, "11-evaluate")

    # Export: the adapter, the report and the zip, each with its verification; download one
    step(page, "Export")
    finished(page, studio, page.get_by_role("button", name="Export run"))
    table = page.locator("#exports")
    assert "adapter" in table.inner_text() and "zip" in table.inner_text()
    shot(page, shots, "12-export")
    with page.expect_download() as info:
        page.locator("#exports a", has_text="report.md").click()
    saved = info.value.path()
    assert saved and "## Exports" in Path(saved).read_text()
    assert table.locator("a", has_text="adapter/adapter_config.json").count() == 1
    with page.expect_download() as info:
        table.locator("a", has_text=".zip").click()
    with zipfile.ZipFile(info.value.path()) as bundle:
        assert bundle.testzip() is None and any(n.endswith("/report.md") for n in bundle.namelist())
