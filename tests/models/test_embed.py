"""Embedders: unit rows of one width, similar texts closer than unrelated ones, clear errors."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from finetuneflow.errors import ConfigError, ModelError
from finetuneflow.models.embed import HashEmbedder, OpenAIEmbedder, load_embedder

TEXTS = [
    "error E21 means the heater plate passed 65 C",
    "what does error E21 mean on the heater plate",
    "the capital of France is Paris",
]


def _check_rows(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.shape == (n, dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_hash_embedder_is_deterministic_and_ranks_overlap_higher() -> None:
    emb = HashEmbedder(128)
    a, b = emb.embed(TEXTS), emb.embed(TEXTS)
    _check_rows(a, 3, 128)
    assert np.array_equal(a, b)
    assert a[0] @ a[1] > a[0] @ a[2]


def test_empty_text_gives_a_zero_row_not_nan() -> None:
    vectors = HashEmbedder(16).embed(["", "word"])
    assert not np.isnan(vectors).any() and not vectors[0].any()


@pytest.mark.parametrize("spec", ["nope", "hash:0", "hash:x", "openai:"])
def test_unknown_spec_is_refused_by_name(spec: str) -> None:
    with pytest.raises(ConfigError, match="unknown"):
        load_embedder(spec)


def test_minilm_loads_offline_and_puts_the_paraphrase_nearest(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sentence_transformers", reason="the memory extra is not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    emb = load_embedder()
    vectors = emb.embed(TEXTS)
    _check_rows(vectors, 3, emb.dim)
    assert emb.dim == 384 and emb.name == "all-MiniLM-L6-v2"
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert emb.embed([]).shape == (0, 384)


class _Handler(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        if body["model"] == "broken":
            self.send_response(500)
            self.end_headers()
            return
        # rows out of order on purpose: the client must sort by index
        data = [{"index": i, "embedding": [float(len(t)), 1.0, 0.0]} for i, t in enumerate(body["input"])]
        payload = json.dumps({"data": data[::-1]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_openai_embedder_posts_sorts_and_normalises(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTF_EMBED_API_KEY", "sk-secret")
    emb = OpenAIEmbedder("tiny", base_url=endpoint)
    vectors = emb.embed(["ab", "abcd"])
    _check_rows(vectors, 2, 3)
    assert emb.dim == 3 and emb.name == "openai:tiny"
    assert vectors[1][0] > vectors[0][0]  # row order follows the input, not the reply
    assert _Handler.seen[-1]["path"] == "/v1/embeddings" and _Handler.seen[-1]["auth"] == "Bearer sk-secret"


def test_openai_embedder_errors_name_the_server_not_the_key(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTF_EMBED_API_KEY", "sk-secret")
    with pytest.raises(ModelError, match="openai:broken") as caught:
        OpenAIEmbedder("broken", base_url=endpoint)
    assert "sk-secret" not in str(caught.value)


def test_openai_embedder_without_a_url_says_which_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FTF_EMBED_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="FTF_EMBED_BASE_URL"):
        load_embedder("openai:x")
