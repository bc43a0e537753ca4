"""GGUF files dequantized once into a cached safetensors folder that training and export load."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from finetuneflow import paths

SOURCE_FILE = "ftf_source.json"  # written next to a converted model: where it came from


def convert_gguf(
    gguf: Path,
    *,
    label: str | None = None,
    origin: Mapping[str, Any] | None = None,
    sha256: str = "",
    chat_template: str | None = None,
) -> Path:
    """Dequantize ``gguf`` once into ``$FTF_HOME/models/<label>-<hash>/`` and return that folder.

    ``label`` defaults to the file's stem; ``origin`` adds to (and overrides) the ``ftf_source.json``
    record ``{"kind": "gguf", "path", "sha256"}``; ``sha256`` skips re-hashing a file the caller has
    just verified; ``chat_template`` is given to a tokenizer that came without one. On a cache hit a
    changed record (a moved file, a new Ollama template) is rewritten; the weights depend on the
    file's hash alone.

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
        if chat_template and not getattr(tok, "chat_template", None):
            tok.chat_template = chat_template
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
