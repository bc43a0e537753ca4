"""`ftf serve` as a user starts it (a subprocess of the CLI), then the `ftf` provider preset: a project
generating its dataset with its own served model. A tiny random model answers junk, not JSON: the
generation must take it through repair and rejection cleanly, every call answered by the server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from finetuneflow.dataset.presets import PRESETS
from finetuneflow.serve.config import DEFAULT_PORT
from finetuneflow.serve.run import free_port
from serve.conftest import PROJECT, RUN, add_run

DATA = Path(__file__).resolve().parents[2] / "examples" / "quickstart" / "data"
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def ftf_serve(tiny_tuned_run: Path, ftf_home: Path) -> Iterator[str]:
    """`python -m finetuneflow.cli serve` of the tiny run on a free port; yields its /v1 URL."""
    add_run(tiny_tuned_run)
    port = free_port()
    env = os.environ | {"PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [
        sys.executable,
        "-m",
        "finetuneflow.cli",
        "serve",
        "-p",
        PROJECT,
        "--run",
        RUN,
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(
        [*command, "--device", "cpu", "--max-tokens", "64"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "ftf serve exited"
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "ftf serve did not start in 120 s"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_ftf_preset_points_at_the_default_port() -> None:
    assert PRESETS["ftf"].base_url == f"http://127.0.0.1:{DEFAULT_PORT}/v1"
    assert PRESETS["ftf"].api_key_env == ""  # loopback: no key


def test_a_project_generates_its_dataset_with_its_own_served_model(ftf_serve: str, tiny_model: Path) -> None:
    from finetuneflow import api
    from finetuneflow.dataset.generate import GenerateConfig
    from finetuneflow.dataset.presets import ProviderConfig
    from finetuneflow.ingest.config import IngestConfig
    from finetuneflow.state import LLMCall, session_scope

    models = httpx.get(f"{ftf_serve}/models").json()["data"]
    assert RUN in [m["id"] for m in models]
    api.ingest([DATA], PROJECT, IngestConfig(tokenizer=str(tiny_model), max_tokens=96, overlap=8, workers=1))
    provider = ProviderConfig(preset="ftf", base_url=ftf_serve, model=RUN, max_tokens=32, timeout_s=60)
    out = api.generate_dataset(PROJECT, provider, GenerateConfig(max_chunks=2), build=False)
    report = out["generation"]
    assert report.chunks == 2 and report.stopped is None
    assert report.new_calls >= 2  # each chunk asked (and, its answer not JSON, asked again to repair)
    assert report.kept == 0 and sum(report.rejected.values()) + report.failed_chunks >= 1
    with session_scope() as s:
        statuses = {c.status for c in s.query(LLMCall).all()}
    assert statuses == {"ok"}  # the server answered every call; the junk was judged by the pipeline
