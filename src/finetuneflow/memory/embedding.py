"""The embedder the memory uses, and which one a project's memory was built with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from finetuneflow import paths

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
SETTING = "memory_embedder"  # the key in the project's project.json


class Embedder(Protocol):
    """Texts to vectors: ``embed`` returns (n, dim) float32 rows of unit length."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def project_embedder(project: str, spec: str = "") -> str:
    """``spec`` if given, else the embedder the project's memory was built with, else the default."""
    return spec or str(paths.project_settings(project).get(SETTING) or DEFAULT_EMBEDDER)


def record_embedder(project: str, spec: str) -> None:
    """Remember ``spec`` as the project's embedder (later opens without one use it)."""
    if paths.project_settings(project).get(SETTING) != spec:
        paths.project_settings(project, **{SETTING: spec})


def load(spec: str) -> Embedder:
    """The embedder named ``spec`` (see ``models.embed.load_embedder``)."""
    from finetuneflow.models.embed import load_embedder

    embedder: Embedder = load_embedder(spec)
    return embedder


def as_vector(blob: bytes) -> np.ndarray:
    """A stored embedding (float32 bytes) as a vector."""
    return np.frombuffer(blob, dtype="float32")
