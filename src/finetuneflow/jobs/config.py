"""Settings of the job queue: where the broker is, how often a job's heart beats, what is retried."""

from __future__ import annotations

import os
from dataclasses import dataclass

from finetuneflow import paths
from finetuneflow.config import setting

BROKER_ENV = "FTF_BROKER_URL"


@dataclass
class JobsConfig:
    """The queue behind ``--background`` and ``ftf worker``. The job state itself lives in the
    project database (``FTF_DATABASE_URL``); the broker only carries "run job N" messages."""

    broker_url: str = setting(
        "",
        f"Celery broker ('' = ${BROKER_ENV}, else SQLite in the state folder: sqla+sqlite:///…/broker.db).",
    )
    concurrency: int = setting(2, "Processes running data jobs (queue 'default') at once; 'train' runs one.")
    heartbeat_s: float = setting(10.0, "Seconds between the heartbeats a running job writes to the database.")
    stale_after_s: float = setting(60.0, "A running job without a heartbeat for this long is lost.")
    requeue_lost: bool = setting(True, "Re-queue a lost queued job (training resumes); off: mark it failed.")
    max_attempts: int = setting(3, "Starts of one job (re-deliveries included) before a lost one is failed.")
    max_retries: int = setting(3, "Retries of a job that failed on a passing error (connection, timeout).")
    retry_backoff_s: float = setting(5.0, "Wait before the first retry; each later one waits twice as long.")
    retry_backoff_max_s: float = setting(300.0, "Longest wait before a retry.")
    visibility_timeout_s: float = setting(
        43200.0, "Redis: an unacknowledged message returns to the queue after this long (a lost worker)."
    )

    def problems(self) -> list[str]:
        out = []
        if self.concurrency < 1:
            out.append("concurrency: must be at least 1")
        if self.heartbeat_s <= 0:
            out.append("heartbeat_s: must be positive")
        if self.stale_after_s <= 2 * self.heartbeat_s:
            out.append("stale_after_s: must exceed two heartbeats (else a slow write looks like a lost job)")
        if self.max_attempts < 1 or self.max_retries < 0:
            out.append("max_attempts: at least 1; max_retries: at least 0")
        if self.retry_backoff_s < 0 or self.retry_backoff_max_s < self.retry_backoff_s:
            out.append("retry_backoff_s: not negative, and at most retry_backoff_max_s")
        return out

    def broker(self) -> str:
        """The broker URL in effect: the setting, ``$FTF_BROKER_URL``, or the embedded SQLite one."""
        return self.broker_url or os.environ.get(BROKER_ENV) or f"sqla+sqlite:///{paths.home() / 'broker.db'}"

    def backoff(self, retries: int) -> float:
        """Seconds to wait before retry number ``retries + 1``."""
        return float(min(self.retry_backoff_s * 2**retries, self.retry_backoff_max_s))
