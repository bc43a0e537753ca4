"""Polling for the job tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def wait_for(
    what: Callable[[], Any], timeout: float, why: str, worker: Any = None, worker_log: Path | None = None
) -> Any:
    """Poll ``what`` until it returns something truthy; fail after ``timeout`` seconds saying
    ``why`` (at once if the ``worker`` process exited), with the end of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (worker is None or worker.poll() is None):
        found = what()
        if found:
            return found
        time.sleep(0.1)
    said = worker_log.read_text()[-3000:] if worker_log and worker_log.exists() else ""
    pytest.fail(f"timed out waiting for {why}\n{said}")
