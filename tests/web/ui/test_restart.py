"""The server restarted mid-training, in a real browser: ``ftf ui --no-worker`` and an ``ftf worker``
as separate processes (so killing the server leaves training going), the tiny model trained from the
Train page, the server SIGKILLed and started again on the same port. The open page must re-attach by
itself (its EventSource reconnects with Last-Event-ID) and its chart get every step exactly once:
the points it was sent are compared with the run's ``metrics.jsonl``. Screenshots before and after
the restart go to ``tests/web/ui/artifacts/``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import QUICKSTART

from finetuneflow.state import jobs as log
from finetuneflow.state import runs as rf

from .conftest import Studio, paused, start_studio, stop_studio, studio_env
from .test_browser import JOB_S, ready, shot, wait_job

PROJECT = "restart"
STEPS = 120  # enough to see points arrive while the server is down (the worker pauses over the restart)
# Every ftf:progress event the page dispatches (what the chart draws from), tagged with the page
# load it happened in: a reload replays the log, and only the live page's share is compared.
# Kept in sessionStorage, written synchronously, so the page's own reload at the end loses nothing.
RECORD = """(() => {
  if (location.protocol !== "http:") return;  // about:blank has no sessionStorage
  const loads = JSON.parse(sessionStorage.getItem("loads") || "[]");
  const load = `load-${loads.length}`;
  sessionStorage.setItem("loads", JSON.stringify([...loads, [load, location.href]]));
  document.addEventListener("ftf:progress", (e) => {
    const seen = JSON.parse(sessionStorage.getItem(load) || "[]");
    sessionStorage.setItem(load, JSON.stringify([...seen, e.detail]));
  });
})();"""
SEEN = """() => Object.fromEntries(JSON.parse(sessionStorage.getItem("loads")).map(([load, url]) =>
  [load, {url, seen: JSON.parse(sessionStorage.getItem(load) || "[]")}]))"""


@pytest.fixture
def worker(ftf_home: Path, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``ftf worker`` (both queues) on the studio's embedded broker, stopped after the test."""
    cmd = ["nice", "-n", "5", sys.executable, "-m", "finetuneflow.cli", "worker", "--loglevel", "WARNING"]
    with (tmp_path / "worker.log").open("ab") as out:
        proc = subprocess.Popen(
            cmd, env=studio_env(ftf_home), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    yield proc
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _ran(client: httpx.Client, response: httpx.Response) -> None:
    """Follow a queued job's event stream to its end; it must have finished."""
    assert response.status_code == 202, response.text
    last: dict[str, Any] = {}
    with client.stream("GET", response.json()["events"], timeout=JOB_S) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                last = json.loads(line[5:])
    assert last.get("kind") == "finished", last


def _prepare(url: str, tiny_model: Path) -> None:
    """A project with a built dataset and the wizard's training settings, through the REST API (the
    browser steps before Train are what test_browser.py covers)."""
    with httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/api/projects", json={"name": PROJECT}).status_code == 201
        p = f"/api/projects/{PROJECT}"
        files = [("files", (f.name, f.read_bytes())) for f in sorted((QUICKSTART / "data").iterdir())]
        assert client.post(f"{p}/files", files=files).status_code == 201
        _ran(client, client.post(f"{p}/ingest", json={"config": {"tokenizer": str(tiny_model)}}))
        _ran(client, client.post(f"{p}/datasets", json={}))
        train = {"method": "lora", "max_steps": STEPS, "max_len": 128, "learning_rate": 0.003, "epochs": 100,
                 "precision": "fp32", "threads": 1}  # fmt: skip
        saved = client.post(
            f"/ui/projects/{PROJECT}/settings",
            json={"model": str(tiny_model), "goal": "style", "train": train},
        )
        assert saved.status_code == 200, saved.text


def _metrics(home: Path, run_id: str) -> list[dict[str, Any]]:
    # read beside the worker that appends to it: a half-written last line is skipped
    return [m for m in rf.read_metrics(home / "projects" / PROJECT / "runs" / run_id) if "loss" in m]


def test_the_page_reattaches_after_a_server_restart(
    ftf_home: Path, tmp_path: Path, chromium: Any, tiny_model: Path, shots: Path,
    worker: subprocess.Popen[bytes],
) -> None:  # fmt: skip
    started = [start_studio(ftf_home, tmp_path / "studio.log", "--no-worker")]
    try:
        _prepare(started[0].url, tiny_model)
        _restart_mid_run(started, ftf_home, tmp_path, chromium, shots, worker)
    finally:
        for studio in started:  # the restarted one too, when the test failed after starting it
            stop_studio(studio)


def _restart_mid_run(
    started: list[Studio],
    home: Path,
    tmp_path: Path,
    chromium: Any,
    shots: Path,
    worker: subprocess.Popen[bytes],
) -> None:
    studio = started[0]
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(RECORD)
    errors: list[str] = []
    context.on("weberror", lambda err: errors.append(str(err.error)))
    page = context.new_page()
    page.goto(studio.url + f"/ui/projects/{PROJECT}/train")
    ready(page)
    page.get_by_role("button", name="Start training").click()
    page.wait_for_url("**job=*")
    ready(page)
    job_id = int(page.url.split("job=")[1].split("&")[0])
    run_id = page.url.split("run=")[1].split("&")[0]
    page.wait_for_function("document.getElementById('loss-chart').dataset.count >= 3", timeout=JOB_S * 1000)
    shot(page, shots, "restart-1-before")

    # SIGKILL the server only: the worker, another process, trains on while nothing answers
    port = int(studio.url.rsplit(":", 1)[1])
    studio.proc.kill()
    studio.proc.wait(20)
    down_at = len(_metrics(home, run_id))
    deadline = time.monotonic() + JOB_S
    while len(_metrics(home, run_id)) < min(down_at + 3, STEPS) and time.monotonic() < deadline:
        assert worker.poll() is None, "the worker died with the server"
        time.sleep(0.2)
    # Hold the worker while the server restarts, so the run is still going when the page re-attaches
    # however fast this machine trains (a CI machine once finished all steps during the restart).
    # A pause of seconds is far inside the jobs' stale_after_s, so nothing is reaped.
    with paused(worker.pid):
        with pytest.raises(httpx.HTTPError):
            httpx.get(studio.url + "/", timeout=2)  # really down
        shown_while_down = int(page.locator("#loss-chart").get_attribute("data-count") or 0)
        assert shown_while_down < len(_metrics(home, run_id)), "the page got points with no server"

        studio = start_studio(home, tmp_path / "studio-2.log", "--no-worker", port=port)
        started.append(studio)
        page.wait_for_function(
            f"document.getElementById('loss-chart').dataset.count > {shown_while_down}", timeout=JOB_S * 1000
        )
        status = page.locator("[data-job-field=status]").inner_text()
        assert status == "running", f"the run ended before the page re-attached ({status})"
        shot(page, shots, "restart-2-reattached")
    assert wait_job(page, studio) == "finished"
    live_url = page.url
    page.wait_for_timeout(1000)  # the page reloads itself once its job is done; then a fresh load
    page.goto(live_url)
    ready(page)
    page.locator("[data-job-panel][data-job-status=finished]").wait_for(timeout=30_000)
    shot(page, shots, "restart-3-done")
    assert not errors, errors

    # the live page (the load that followed the job through the restart) got each step once, in order
    loads = page.evaluate(SEEN)
    first = next(load for load in sorted(loads, key=lambda k: int(k[5:])) if loads[load]["url"] == live_url)
    live = [p for p in loads[first]["seen"] if p.get("stage") == "step"]
    metrics = _metrics(home, run_id)
    assert [p["done"] for p in live] == [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    assert all(abs(p["metrics"]["loss"] - m["loss"]) < 1e-4 for p, m in zip(live, metrics, strict=True))
    seqs = [e["seq"] for e in log.events(job_id)]
    page.wait_for_function(f"document.querySelectorAll('[data-job-field=log] li').length >= {len(seqs)}")
    lines = page.eval_on_selector_all("[data-job-field=log] li", "els => els.map((e) => e.textContent)")
    shown = [int(line.split()[0]) for line in lines]  # the log sits in a closed <details>
    assert shown == seqs  # the reloaded page replays the whole log, once
    chart = page.locator("#loss-chart")
    assert int(chart.get_attribute("data-count") or 0) == STEPS
    evals = [m for m in rf.read_metrics(home / "projects" / PROJECT / "runs" / run_id) if "eval_loss" in m]
    assert len(evals) >= 2 and int(chart.get_attribute("data-eval-count") or 0) == len(evals)
    context.close()
