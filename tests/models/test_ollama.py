"""``ollama:NAME`` base models, against a fake but real-format Ollama store built in tmp."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from finetuneflow.errors import ModelError
from finetuneflow.models import ollama
from finetuneflow.models.convert import SOURCE_FILE
from finetuneflow.models.ollama import OllamaName, locate, ollama_source, parse_name, resolve_ollama
from finetuneflow.models.resolve import default_gguf, resolve_model
from finetuneflow.paths import sha256_file

TEMPLATE = "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ .Prompt }}"
PARAMS = {"stop": ["<|im_start|>", "<|im_end|>"], "temperature": 0.2}
LIBRARY = ("registry.ollama.ai", "library")


class Store:
    """An Ollama model store: content-addressed blobs and one manifest file per name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs").mkdir(parents=True)
        (root / "manifests").mkdir()

    def blob(self, data: bytes) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        (self.root / "blobs" / f"sha256-{digest}").write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    def layer(self, kind: str, data: bytes) -> dict[str, Any]:
        return {"mediaType": f"application/vnd.ollama.image.{kind}", **self.blob(data)}

    def add(
        self, model: str, tag: str, layers: list[dict[str, Any]], where: tuple[str, str] = LIBRARY
    ) -> Path:
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", **self.blob(b"{}")},
            "layers": layers,
        }
        path = self.root / "manifests" / where[0] / where[1] / model / tag
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(manifest))
        return path

    def standard_layers(self, gguf: bytes) -> list[dict[str, Any]]:
        return [
            self.layer("model", gguf),
            self.layer("template", TEMPLATE.encode()),
            self.layer("system", b"You are terse."),
            self.layer("params", json.dumps(PARAMS).encode()),
            self.layer("license", b"Apache 2.0"),
        ]


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A small valid GGUF (one tensor, a few keys): enough for every check short of converting."""
    import numpy as np
    from gguf import GGUFWriter

    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "ollama"))
    return Store(tmp_path / "ollama")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ollama:smollm2", "registry.ollama.ai/library/smollm2:latest"),
        ("ollama:smollm2:135m", "registry.ollama.ai/library/smollm2:135m"),
        ("ollama:library/llama3.2:1b", "registry.ollama.ai/library/llama3.2:1b"),
        ("ollama:myuser/mymodel:latest", "registry.ollama.ai/myuser/mymodel:latest"),
        ("ollama:hf.co/bartowski/SmolLM2-135M-GGUF:Q4_K_M", "hf.co/bartowski/SmolLM2-135M-GGUF:Q4_K_M"),
        ("ollama:localhost:5000/team/m:v1", "localhost:5000/team/m:v1"),
        ("ollama:localhost:5000/team/m", "localhost:5000/team/m:latest"),
        ("OLLAMA:qwen2.5:0.5b", "registry.ollama.ai/library/qwen2.5:0.5b"),
    ],
)
def test_names_normalize_like_ollama(name: str, expected: str) -> None:
    assert str(parse_name(name)) == expected


def test_short_names_drop_only_the_defaults() -> None:
    assert OllamaName(*LIBRARY, "smollm2", "135m").short == "smollm2:135m"
    assert OllamaName("registry.ollama.ai", "me", "m", "latest").short == "me/m:latest"
    assert OllamaName("hf.co", "library", "m", "q4").short == "hf.co/library/m:q4"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("ollama:../../etc/passwd", "looks like a path"),
        ("ollama:library/..:latest", "looks like a path"),
        ("ollama:/abs/model:tag", "looks like a path"),
        ("ollama:~/model", "looks like a path"),
        ("ollama:ns\\model", "looks like a path"),
        ("ollama:", "bad model"),
        ("ollama::tag", "bad model"),
        ("ollama:a/b/c/d:tag", "use \\[host/\\]"),
        ("ollama:my.ns/model", "bad namespace"),
        ("ollama:ns/.hidden", "bad model"),
        ("ollama:model:ta g", "bad tag"),
        ("ollama:a//b", "bad namespace"),
    ],
)
def test_bad_names_and_path_tricks_are_refused(name: str, why: str) -> None:
    with pytest.raises(ModelError, match=why):
        parse_name(name)


def test_locate_reads_blob_template_system_and_params(store: Store, tiny_gguf: bytes) -> None:
    store.add("smollm2", "135m", store.standard_layers(tiny_gguf))
    found = locate("ollama:smollm2:135m")
    assert found.blob.read_bytes() == tiny_gguf
    assert found.blob.parent == store.root / "blobs"
    assert found.digest == "sha256:" + hashlib.sha256(tiny_gguf).hexdigest()
    assert (found.template, found.system, found.params) == (TEMPLATE, "You are terse.", PARAMS)
    source = found.source()
    assert source["kind"] == "ollama" and source["name"] == "registry.ollama.ai/library/smollm2:135m"
    assert source["sha256"] == found.digest.removeprefix("sha256:") and source["path"] == str(found.blob)
    assert "license" not in source


def test_optional_layers_may_be_absent(store: Store, tiny_gguf: bytes) -> None:
    store.add("bare", "latest", [store.layer("model", tiny_gguf)], where=("registry.ollama.ai", "me"))
    source = locate("ollama:me/bare").source()
    assert not {"template", "system", "params"} & source.keys()


def test_lowercased_store_paths_are_found(store: Store, tiny_gguf: bytes) -> None:
    """Older Ollama versions lowercased the manifest path; names keep their case."""
    store.add("smollm2-135m-gguf", "q4_k_m", [store.layer("model", tiny_gguf)], where=("hf.co", "bartowski"))
    assert locate("ollama:hf.co/bartowski/SmolLM2-135M-GGUF:Q4_K_M").blob.is_file()


def test_missing_store_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match=r"nowhere.*OLLAMA_MODELS is set"):
        locate("ollama:smollm2")
    monkeypatch.delenv("OLLAMA_MODELS")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(ollama, "SERVICE_STORE", tmp_path / "service")
    with pytest.raises(ModelError, match=r"home/\.ollama/models.*service.*set OLLAMA_MODELS"):
        locate("ollama:smollm2")


def test_user_store_is_used_without_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_gguf: bytes
) -> None:
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(ollama, "SERVICE_STORE", tmp_path / "service")
    store = Store(tmp_path / "home" / ".ollama" / "models")
    store.add("smollm2", "latest", [store.layer("model", tiny_gguf)])
    assert locate("ollama:smollm2").blob.parent == store.root / "blobs"


def test_unknown_tag_lists_the_tags_that_exist(store: Store, tiny_gguf: bytes) -> None:
    for tag in ("135m", "360m"):
        store.add("smollm2", tag, [store.layer("model", tiny_gguf)])
    with pytest.raises(ModelError, match=r"no tag '1\.7b'; its tags: 135m, 360m"):
        locate("ollama:smollm2:1.7b")


def test_unknown_model_lists_close_or_installed_models(store: Store, tiny_gguf: bytes) -> None:
    store.add("smollm2", "135m", [store.layer("model", tiny_gguf)])
    store.add("mymodel", "latest", [store.layer("model", tiny_gguf)], where=("registry.ollama.ai", "me"))
    with pytest.raises(ModelError, match=r"no Ollama model 'smollm:135m'.*closest: smollm2:135m"):
        locate("ollama:smollm:135m")
    with pytest.raises(ModelError, match=r"installed: me/mymodel:latest, smollm2:135m"):
        locate("ollama:other/zzz")
    with pytest.raises(ModelError, match="no Ollama model"):  # the dispatch chain reaches it
        resolve_model("ollama:qwen3")


@pytest.mark.parametrize(
    ("layers", "why"),
    [
        (lambda s, g: [s.layer("template", b"x")], "no model layer"),
        (lambda s, g: [s.layer("model", g), s.layer("model", g + b"\0")], "2 model layers"),
        (lambda s, g: [*s.standard_layers(g), s.layer("adapter", b"lora")], "adapter layer.*not supported"),
        (lambda s, g: [s.layer("model", b"PK\3\4 not a gguf")], "not a GGUF file"),
        (lambda s, g: [{"mediaType": ollama.MODEL_LAYER, "digest": "sha256:../../x"}], "invalid digest"),
        (lambda s, g: [{"mediaType": ollama.MODEL_LAYER, "digest": "sha256:" + "0" * 64}], "missing"),
    ],
    ids=["no-model", "two-models", "adapter", "not-gguf", "digest-path-trick", "blob-missing"],
)
def test_unusable_manifests_are_refused(store: Store, tiny_gguf: bytes, layers: Any, why: str) -> None:
    store.add("m", "latest", layers(store, tiny_gguf))
    with pytest.raises(ModelError, match=why):
        locate("ollama:m")


def test_unreadable_manifest_is_refused(store: Store) -> None:
    store.add("m", "latest", []).write_text("{not json")
    with pytest.raises(ModelError, match="cannot read the Ollama manifest"):
        locate("ollama:m")
    store.add("m", "latest", []).write_text(json.dumps({"layers": [{"mediaType": 3}]}))
    with pytest.raises(ModelError, match="no valid 'layers'"):
        locate("ollama:m")


@pytest.mark.parametrize("kind", ["model", "template"])
def test_blob_digest_mismatch_is_refused(store: Store, tiny_gguf: bytes, kind: str) -> None:
    layers = store.standard_layers(tiny_gguf)
    store.add("m", "latest", layers)
    digest = next(layer["digest"] for layer in layers if layer["mediaType"].endswith(kind))
    blob = store.root / "blobs" / digest.replace(":", "-")
    blob.write_bytes(blob.read_bytes()[:-1] + b"!")  # same size, one byte flipped
    with pytest.raises(ModelError, match="does not match its digest.*ollama pull m:latest"):
        locate("ollama:m")


def test_params_layer_must_be_a_json_object(store: Store, tiny_gguf: bytes) -> None:
    store.add("m", "latest", [store.layer("model", tiny_gguf), store.layer("params", b"[1]")])
    with pytest.raises(ModelError, match="params layer"):
        locate("ollama:m")


def test_ollama_source_is_none_for_other_models(tmp_path: Path, tiny_model: Path) -> None:
    assert ollama_source(tiny_model) is None
    (tmp_path / SOURCE_FILE).write_text(json.dumps({"kind": "gguf", "path": "x", "sha256": "y"}))
    assert ollama_source(tmp_path) is None
    (tmp_path / SOURCE_FILE).write_text(json.dumps({"kind": "ollama", "name": "n"}))
    assert ollama_source(tmp_path) == {"kind": "ollama", "name": "n"}


@pytest.mark.slow
def test_ollama_model_converts_once_loads_and_records_its_origin(store: Store) -> None:
    """The real default GGUF, stored as an Ollama blob, becomes a loadable safetensors folder."""
    from finetuneflow.models.load import load_causal_lm

    gguf = default_gguf()
    digest = sha256_file(gguf)
    blob = store.root / "blobs" / f"sha256-{digest}"
    try:
        os.link(gguf, blob)
    except OSError:  # another file system
        blob.symlink_to(gguf)
    model_layer = {"mediaType": ollama.MODEL_LAYER, "digest": f"sha256:{digest}", "size": blob.stat().st_size}
    layers = [model_layer, *store.standard_layers(b"")[1:]]
    store.add("smollm2", "135m", layers)

    folder = resolve_model("ollama:smollm2:135m")
    assert folder.name.startswith("ollama-smollm2-135m-")
    source = ollama_source(folder)
    assert source is not None
    assert source["kind"] == "ollama" and source["name"] == "registry.ollama.ai/library/smollm2:135m"
    assert source["digest"] == f"sha256:{digest}" and source["sha256"] == digest
    assert source["path"] == str(blob)
    assert (source["template"], source["params"]) == (TEMPLATE, PARAMS)
    model = load_causal_lm(folder)
    assert model.config.model_type == "llama" and getattr(model.config, "quantization_config", None) is None

    # a new template on the same weights: same folder, no second conversion, the record follows it
    weights = (folder / "model.safetensors").stat().st_mtime_ns
    store.add("smollm2", "135m", [model_layer, store.layer("template", b"{{ .Prompt }}")])
    assert resolve_ollama("ollama:smollm2:135m") == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == weights
    updated = ollama_source(folder)
    assert updated is not None and updated["template"] == "{{ .Prompt }}"
    assert "params" not in updated and "system" not in updated
