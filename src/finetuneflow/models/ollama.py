"""Base models from the local Ollama store: ``ollama:NAME`` → its GGUF blob → a safetensors folder.

The store (``$OLLAMA_MODELS``, else ``~/.ollama/models`` or the Linux service's
``/usr/share/ollama/.ollama/models``) is laid out like an OCI registry::

    <root>/manifests/<host>/<namespace>/<model>/<tag>     JSON: {"layers": [{"mediaType", "digest"}, ...]}
    <root>/blobs/sha256-<hex>                            content-addressed layer files

A name ``[host/][namespace/]model[:tag]`` defaults to ``registry.ollama.ai``, ``library`` and
``latest``. The model layer is the GGUF; the template, system and params layers are recorded in
``ftf_source.json`` so the export step can write a Modelfile ``FROM <name>`` with the same
template and stop words. Nothing is ever written into the Ollama store.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetuneflow import paths
from finetuneflow.errors import ModelError
from finetuneflow.models.convert import SOURCE_FILE, convert_gguf

PREFIX = "ollama:"
DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
USER_STORE = Path("~/.ollama/models")
SERVICE_STORE = Path("/usr/share/ollama/.ollama/models")  # the Linux install script's service user

MEDIA = "application/vnd.ollama.image."
MODEL_LAYER = MEDIA + "model"
ADAPTER_LAYER = MEDIA + "adapter"
TEMPLATE_LAYER, SYSTEM_LAYER, PARAMS_LAYER = MEDIA + "template", MEDIA + "system", MEDIA + "params"
SMALL_LAYER_MAX = 1 << 20  # template/system/params are a few KB; refuse anything absurd

# Ollama's own rules (types/model/name.go): a part starts with a letter, digit or '_', then also
# '-' and '.'; no '.' in a namespace, ':' only in a host (its port). This alone keeps every part a
# plain folder name: no '..', no separators, no empty part from a leading '/'.
_PART = {
    "host": re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}$"),
    "namespace": re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,79}$"),
    "model": re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}$"),
    "tag": re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}$"),
}
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")


@dataclass(frozen=True)
class OllamaName:
    """A fully qualified Ollama model name."""

    host: str
    namespace: str
    model: str
    tag: str

    def __str__(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def short(self) -> str:
        """The name as ``ollama list`` shows it: default host and namespace left out."""
        prefix = "" if self.host == DEFAULT_HOST else f"{self.host}/"
        if prefix or self.namespace != DEFAULT_NAMESPACE:
            prefix += f"{self.namespace}/"
        return f"{prefix}{self.model}:{self.tag}"


@dataclass(frozen=True)
class OllamaModel:
    """What the store holds for one name: the verified GGUF blob and the layers export needs."""

    name: OllamaName
    store: Path
    blob: Path
    digest: str  # "sha256:<hex>", verified against the blob's content
    template: str | None = None
    system: str | None = None
    params: dict[str, Any] | None = None

    @property
    def sha256(self) -> str:
        return self.digest.removeprefix("sha256:")

    def source(self) -> dict[str, Any]:
        """The ``ftf_source.json`` record of a model converted from this blob."""
        record: dict[str, Any] = {
            "kind": "ollama",
            "name": str(self.name),
            "digest": self.digest,
            "path": str(self.blob),
            "sha256": self.sha256,
        }
        for key in ("template", "system", "params"):
            if getattr(self, key) is not None:
                record[key] = getattr(self, key)
        return record


def parse_name(name: str) -> OllamaName:
    """Parse ``[ollama:][host/][namespace/]model[:tag]`` into a fully qualified name.

    Raises:
        ModelError: an empty name, a path trick (``..``, absolute path, backslash), too many parts,
            or a part Ollama itself would reject.
    """
    raw = name[len(PREFIX) :] if name.lower().startswith(PREFIX) else name
    if ".." in raw or raw.startswith(("/", "~")) or "\\" in raw:
        raise ModelError(f"refusing Ollama name {name!r}: it looks like a path, not a model name")
    rest, sep, tag = raw.rpartition(":")
    if not sep or "/" in tag:  # no tag; a ':' before the last '/' is a host's port
        rest, tag = raw, DEFAULT_TAG
    parts = rest.split("/")
    if len(parts) > 3:
        raise ModelError(f"invalid Ollama name {name!r}: use [host/][namespace/]model[:tag]")
    defaults = [DEFAULT_HOST, DEFAULT_NAMESPACE][: 3 - len(parts)]
    host, namespace, model = [*defaults, *parts]
    parsed = OllamaName(host=host, namespace=namespace, model=model, tag=tag)
    bad = [kind for kind, rule in _PART.items() if not rule.match(getattr(parsed, kind))]
    if bad:
        raise ModelError(
            f"invalid Ollama name {name!r}: bad {', '.join(bad)} (letters, digits, '_', '-' and '.'; "
            "starting with a letter, digit or '_')"
        )
    return parsed


def store_root() -> Path:
    """The Ollama store: ``$OLLAMA_MODELS``, else the user's or the Linux service's folder.

    Raises:
        ModelError: no candidate holds a ``manifests`` folder; the message lists where it looked.
    """
    env = os.environ.get("OLLAMA_MODELS")
    candidates = [Path(env).expanduser()] if env else [USER_STORE.expanduser(), SERVICE_STORE]
    for root in candidates:
        if (root / "manifests").is_dir():
            return root
    looked = ", ".join(str(root) for root in candidates)
    how = (
        "OLLAMA_MODELS is set, so only that folder is used; fix or unset it"
        if env
        else "set OLLAMA_MODELS to the folder `ollama serve` uses"
    )
    raise ModelError(f"no Ollama model store found (looked in {looked}); {how}, or `ollama pull` a model")


def locate(name: str) -> OllamaModel:
    """Find ``name`` in the store and return its verified GGUF blob and template layers.

    Raises:
        ModelError: no store, unknown model or tag, an unreadable manifest, no model layer, an
            adapter layer, a missing blob, a digest mismatch or a model blob that is not GGUF.
    """
    parsed = parse_name(name)
    root = store_root()
    layers = _read_manifest(_manifest_path(root, parsed), parsed)
    kinds = [layer["mediaType"] for layer in layers]
    if ADAPTER_LAYER in kinds:
        raise ModelError(
            f"Ollama model {parsed.short!r} already carries an adapter layer (ADAPTER in its Modelfile); "
            "training on top of an adapted Ollama model is not supported. Use its base model instead "
            "(the FROM line of `ollama show --modelfile`)."
        )
    models = [layer for layer in layers if layer["mediaType"] == MODEL_LAYER]
    if len(models) != 1:
        found = f"{len(models)} model layers" if models else f"no model layer (layers: {kinds})"
        raise ModelError(f"Ollama manifest of {parsed.short!r} has {found}; expected exactly one GGUF")
    digest = models[0]["digest"]
    blob = _blob(root, digest, parsed)
    with blob.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ModelError(f"the model blob of {parsed.short!r} ({blob}) is not a GGUF file")
    _check_digest(blob, digest, paths.sha256_file(blob), parsed)
    small = {
        layer["mediaType"]: _small_text(root, layer["digest"], parsed)
        for layer in layers
        if layer["mediaType"] in (TEMPLATE_LAYER, SYSTEM_LAYER, PARAMS_LAYER)
    }
    params = small.get(PARAMS_LAYER)
    return OllamaModel(
        name=parsed,
        store=root,
        blob=blob,
        digest=digest,
        template=small.get(TEMPLATE_LAYER),
        system=small.get(SYSTEM_LAYER),
        params=_params(params, parsed) if params is not None else None,
    )


def resolve_ollama(name: str) -> Path:
    """Convert the GGUF behind ``ollama:NAME`` once (cached) and return the safetensors folder.

    Raises:
        ModelError: see :func:`locate`.
    """
    found = locate(name)
    slug = re.sub(r"[^a-z0-9._-]+", "-", found.name.short.lower())
    return convert_gguf(found.blob, label=f"ollama-{slug}", origin=found.source(), sha256=found.sha256)


def ollama_source(model_dir: Path) -> dict[str, Any] | None:
    """The Ollama origin recorded in ``model_dir/ftf_source.json``, or None for any other model."""
    try:
        source = json.loads((Path(model_dir) / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return source if isinstance(source, dict) and source.get("kind") == "ollama" else None


def _manifest_path(root: Path, name: OllamaName) -> Path:
    """The manifest file; older Ollama versions wrote the path lowercased, so match case-insensitively."""
    folder = root / "manifests"
    for kind in ("host", "namespace", "model", "tag"):
        part = getattr(name, kind)
        child = _child(folder, part)
        if child is None:
            raise ModelError(_not_found(root, name, kind, folder))
        folder = child
    if not folder.is_file():
        raise ModelError(f"Ollama manifest {folder} is not a file")
    return folder


def _child(folder: Path, part: str) -> Path | None:
    if (folder / part).exists():
        return folder / part
    if not folder.is_dir():
        return None
    return next((p for p in sorted(folder.iterdir()) if p.name.lower() == part.lower()), None)


def _not_found(root: Path, name: OllamaName, kind: str, folder: Path) -> str:
    """Say what is missing and what the store does hold near it."""
    if kind == "tag":
        tags = sorted(p.name for p in folder.iterdir() if p.is_file())
        return (
            f"Ollama model {name.model!r} has no tag {name.tag!r}; its tags: {', '.join(tags) or 'none'}. "
            f"`ollama pull {name.short}` fetches it."
        )
    installed = installed_names(root)
    close = difflib.get_close_matches(name.short, installed, n=5, cutoff=0.7)
    shown = close or installed[:20]
    listing = f"; {'closest' if close else 'installed'}: {', '.join(shown)}" if shown else "; it is empty"
    return f"no Ollama model {name.short!r} in {root}{listing}. `ollama pull {name.short}` fetches it."


def installed_names(root: Path) -> list[str]:
    """Every ``model:tag`` in the store, in ``ollama list`` form, sorted."""
    names = []
    for manifest in sorted((root / "manifests").glob("*/*/*/*")):
        if manifest.is_file():
            tag, model, namespace, host = (p.name for p in (manifest, *list(manifest.parents)[:3]))
            names.append(OllamaName(host, namespace, model, tag).short)
    return sorted(names)


def _read_manifest(path: Path, name: OllamaName) -> list[dict[str, str]]:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read the Ollama manifest of {name.short!r} ({path}): {err}") from None
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    if not isinstance(layers, list) or not all(
        isinstance(layer, dict)
        and isinstance(layer.get("mediaType"), str)
        and isinstance(layer.get("digest"), str)
        for layer in layers
    ):
        raise ModelError(f"Ollama manifest {path} has no valid 'layers' list (mediaType + digest each)")
    return layers


def _blob(root: Path, digest: str, name: OllamaName) -> Path:
    match = _DIGEST.match(digest)
    if match is None:  # also what keeps a crafted digest from pointing outside blobs/
        raise ModelError(f"Ollama manifest of {name.short!r} has an invalid digest {digest!r}")
    blob = root / "blobs" / f"sha256-{match.group(1)}"
    if not blob.is_file():
        raise ModelError(
            f"blob {blob} of Ollama model {name.short!r} is missing; `ollama pull {name.short}` repairs it"
        )
    return blob


def _check_digest(blob: Path, digest: str, actual: str, name: OllamaName) -> None:
    if f"sha256:{actual}" != digest:
        raise ModelError(
            f"blob {blob} of Ollama model {name.short!r} does not match its digest {digest} "
            f"(content hashes to sha256:{actual}); the store is damaged: `ollama pull {name.short}`"
        )


def _small_text(root: Path, digest: str, name: OllamaName) -> str:
    """A small layer's text (template, system, params), its digest checked like the model's."""
    blob = _blob(root, digest, name)
    if blob.stat().st_size > SMALL_LAYER_MAX:
        raise ModelError(f"layer {blob} of Ollama model {name.short!r} is too large for a template")
    data = blob.read_bytes()
    _check_digest(blob, digest, hashlib.sha256(data).hexdigest(), name)
    return data.decode("utf-8", errors="replace")


def _params(text: str, name: OllamaName) -> dict[str, Any]:
    try:
        params = json.loads(text)
    except ValueError:
        params = None
    if not isinstance(params, dict):
        raise ModelError(f"the params layer of Ollama model {name.short!r} is not a JSON object")
    return params
