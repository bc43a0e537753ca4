"""``ftf serve``: the served models behind an OpenAI-compatible HTTP API (FastAPI on uvicorn).

A room of its own above :mod:`finetuneflow.api`: the routes parse and answer HTTP, and every
decision (which model, what prompt, which limits) is an :mod:`finetuneflow.api.serving` call.
"""
