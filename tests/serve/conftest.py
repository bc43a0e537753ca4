"""A live ``ftf serve`` over real HTTP: the tiny model and the tiny tuned run's adapter, served by
uvicorn on a thread at a free port, called with the official ``openai`` client."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from finetuneflow import paths

PROJECT = "p"
RUN = "tiny-run"


@dataclass
class Live:
    """A running server: its URL, the API object behind it, and a client."""

    url: str
    server: Any  # api.serving.ModelServer
    client: Any  # openai.OpenAI
    base: str  # the base model's served name


def add_run(tiny_tuned_run: Path, project: str = PROJECT, run: str = RUN) -> None:
    """Make a copy of the tiny tuned run the newest finished run of ``project``."""
    from finetuneflow.api._common import finish_run, record_run
    from finetuneflow.state import session_scope
    from finetuneflow.state.repo import get_or_create_project

    with session_scope() as s:
        pid = get_or_create_project(s, project).id
    folder = paths.project_dir(project) / "runs" / run
    shutil.copytree(tiny_tuned_run, folder, ignore=shutil.ignore_patterns("checkpoints"))
    record_run(pid, run, folder, "causal", "default", "tiny", {})
    finish_run(run, "finished", {})


def start(
    tiny_tuned_run: Path,
    memory: Any = None,
    host: str = "127.0.0.1",
    key_env: str = "FTF_SERVE_API_KEY",
    **limits: Any,
) -> tuple[Any, Any]:
    """(ModelServer, Background) serving the tiny run and its base on a free port."""
    from finetuneflow.api.serving import ModelServer, ServingSettings, load_served
    from finetuneflow.serve.config import ServeConfig
    from finetuneflow.serve.run import start_background

    add_run(tiny_tuned_run)
    settings = ServingSettings(device="cpu", **limits)
    server = ModelServer(load_served(PROJECT, [RUN], device="cpu"), settings, memory)
    cfg = ServeConfig(host=host, port=0, api_key_env=key_env, max_request_bytes=64_000, model=settings)
    try:
        return server, start_background(server, cfg)
    except BaseException:
        server.close()
        raise


@pytest.fixture
def live(tiny_tuned_run: Path, ftf_home: Path) -> Iterator[Live]:
    from openai import OpenAI

    server, background = start(tiny_tuned_run, max_tokens=64, max_prompt_tokens=200)
    client = OpenAI(base_url=background.url, api_key="unused", max_retries=0, timeout=60)
    try:
        yield Live(background.url, server, client, next(iter(server.served.adapters)))
    finally:
        background.stop()
        server.close()
