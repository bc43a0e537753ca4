"""Which embedder a project's memory was built with (``models.embed`` has the embedders)."""

from __future__ import annotations

from functools import cache

import numpy as np

from finetuneflow import paths
from finetuneflow.models.embed import DEFAULT_EMBEDDER, Embedder, load_embedder

SETTING = "memory_embedder"  # the key in the project's project.json


def project_embedder(project: str, spec: str = "") -> str:
    """``spec`` if given, else the embedder the project's memory was built with, else the default."""
    return spec or str(paths.project_settings(project).get(SETTING) or DEFAULT_EMBEDDER)


def record_embedder(project: str, spec: str) -> None:
    """Remember ``spec`` as the project's embedder (later opens without one use it)."""
    if paths.project_settings(project).get(SETTING) != spec:
        paths.project_settings(project, **{SETTING: spec})


@cache
def load(spec: str) -> Embedder:
    """The embedder named ``spec`` (see ``models.embed.load_embedder``), loaded once per process."""
    return load_embedder(spec)


def as_vector(blob: bytes | None) -> np.ndarray:
    """A stored embedding (float32 bytes) as a vector (empty when there is none)."""
    return np.frombuffer(blob or b"", dtype="float32")
