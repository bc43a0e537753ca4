"""Durable jobs: steps queued on Celery (``--background``, ``ftf worker``), their state an
append-only event log in the project database (``state/jobs.py``).

Embedded by default (broker on SQLite in the state folder, nothing to install or start); scaled
out with ``FTF_BROKER_URL=redis://...`` and ``FTF_DATABASE_URL=postgresql+psycopg://...`` and
``ftf worker --queues train`` on other machines. The REST API wraps these same functions::

    from finetuneflow import jobs
    job_id = jobs.submit("train", "demo", {"dataset": "default", "run_id": "...", "config": {...}})
    for event in jobs.follow(job_id):
        print(event["kind"], event["payload"])

Needs the ``jobs`` extra (celery, redis).
"""

from finetuneflow.jobs.client import cancel, follow, list_jobs, reap, show, submit
from finetuneflow.jobs.config import JobsConfig

__all__ = ["JobsConfig", "cancel", "follow", "list_jobs", "reap", "show", "submit"]
