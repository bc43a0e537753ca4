"""Base models: resolving what a user names into a local safetensors folder, and loading it."""

from finetuneflow.errors import ModelError
from finetuneflow.models.resolve import DEFAULT_MODEL, resolve_model

__all__ = ["DEFAULT_MODEL", "ModelError", "resolve_model"]
