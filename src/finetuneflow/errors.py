"""Every error FineTuneFlow raises on purpose, in one place.

Each says in words a user can act on what went wrong and what to do. The steps raise them, and the
CLI, the API and later the REST routes turn them into messages and exit codes, so each wrapper needs
to know one module, not every step's internals. Built-in base classes are kept (``ValueError`` for
bad input, ``RuntimeError`` for work that could not finish) so ``except ValueError`` still works.
"""

from __future__ import annotations

from typing import Literal


class ConfigError(ValueError):
    """One or more settings are invalid; ``errors`` lists each as 'key: problem (fix)'."""

    def __init__(self, errors: list[str], what: str = "config") -> None:
        self.errors = errors
        super().__init__(f"invalid {what}:\n" + "\n".join(f"  - {e}" for e in errors))


# --- ingest
class ReaderError(Exception):
    """A source file cannot be read; the message says why in words a user can act on."""


# --- models
class ModelError(ValueError):
    """A model name cannot be resolved; the message says what was tried and what to do."""


class ChatTemplateError(ValueError):
    """The tokenizer's chat template cannot be used for training (the message says why)."""


# --- dataset
ErrorKind = Literal[
    "timeout", "rate_limit", "server", "connection", "auth", "not_found", "bad_request", "bad_response"
]


class ProviderError(RuntimeError):
    """An LLM provider call failed; ``kind`` says how (timeout, rate_limit, server, connection, auth,
    not_found, bad_request, bad_response), ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, kind: ErrorKind, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind: ErrorKind = kind
        self.status = status
        self.attempts = 0  # HTTP requests made before giving up
        self.retry_after: float | None = None  # seconds the server asked us to wait


class CircuitOpen(ProviderError):
    """Too many calls in a row failed; no more requests are sent by this Provider."""


class LLMJSONError(ValueError):
    """No JSON value could be recovered from an LLM answer; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FormatTemplateError(ValueError):
    """A conversation cannot be written in a text template (the official template would refuse it too)."""


# --- train and classify
class TrainingError(RuntimeError):
    """Training cannot go on (NaN loss, nothing to train on, a finished run in the way, OOM)."""


class FinishedRunError(TrainingError):
    """The run folder already holds a finished run; it is never overwritten."""


class RunInUse(RuntimeError):
    """A run cannot be deleted now: a queued or live job uses it (the message names the job)."""


class ProjectInUse(RuntimeError):
    """A project cannot be deleted now: a queued or live job works in it (the message names the job)."""


class ClassifyDataError(ValueError):
    """The labelled CSV cannot be used; the message names the file, the rows and the fix."""


# --- export
class ExportError(RuntimeError):
    """An export failed or did not verify; the message carries the numbers."""


class VerificationError(RuntimeError):
    """An artefact does not reproduce the trained model; the message has the numbers."""


class TensorsError(ValueError):
    """Safetensors inputs cannot be combined; the message lists every conflict with names and shapes."""


class OllamaTemplateError(ValueError):
    """A chat template cannot be translated to Ollama's Go template (or the translation does not
    reproduce it)."""


class UnsupportedTemplate(OllamaTemplateError):
    """A Go template uses constructs beyond the evaluator's subset."""


class ModelfileError(ValueError):
    """A Modelfile breaks the documented syntax; the message names the line."""


# --- serve
class RequestRejected(ValueError):
    """A request to the model server cannot be answered as asked: ``param`` names the field at
    fault, ``code`` is the OpenAI-style error code (``context_length_exceeded``, ...)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


# --- jobs
class QueueUnavailable(RuntimeError):
    """The job queue's broker did not take a job (down, or refused it); the job is marked failed."""


class JobCancelled(Exception):
    """A job was cancelled (``ftf jobs cancel``) while it ran; raised from its progress callback.
    Not a RuntimeError: a step's ``except RuntimeError`` must not swallow it."""


class JobSuperseded(JobCancelled):
    """Another attempt of this job started while this one was paused or cut off from the database
    (its heartbeat went stale and the job was sent again): this one stops, leaving the job's state
    to the attempt that owns it. A JobCancelled, so that steps pass it through the same way."""


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is memory running out: Python's ``MemoryError``, torch's
    ``OutOfMemoryError`` (a GPU's), or the plain ``RuntimeError`` torch's CPU allocator raises."""
    text = str(err)
    return (
        isinstance(err, MemoryError)
        or type(err).__name__ == "OutOfMemoryError"
        or any(s in text for s in ("can't allocate memory", "out of memory"))
    )
