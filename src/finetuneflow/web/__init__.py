"""The studio's REST API (``/api/...``): a FastAPI app over ``finetuneflow.api`` and
``finetuneflow.jobs``. Routes hold no logic of their own: they parse, call the same functions the
CLI calls (long steps queued as jobs), and answer; a job's history streams as server-sent events
from the database, so a client re-attaches after any restart. ``ftf ui`` serves it::

    from finetuneflow.web import WebConfig, create_app
    app = create_app(WebConfig())  # then uvicorn.run(app, host=..., port=...)

Needs the ``web`` extra (fastapi, uvicorn, python-multipart) and the ``jobs`` extra.
"""

from finetuneflow.web.app import create_app
from finetuneflow.web.config import WebConfig

__all__ = ["WebConfig", "create_app"]
