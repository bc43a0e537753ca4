"""What the wizard remembers per project between pages: the chosen model, the task, the provider
(never its key) and the training settings the Hardware step applied. Kept in the project's
``project.json`` under ``studio``, so a reload, another browser or a restarted server sees the same."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetuneflow import paths
from finetuneflow.config import from_dict, setting, to_dict

KEY = "studio"


@dataclass
class StudioSettings:
    """The wizard's choices for one project; each step reads and writes its own fields."""

    model: str = setting(
        "smollm2-135m-instruct",
        "Base model: the default name or a local Hugging Face folder; also the ingest tokenizer.",
    )
    goal: str = setting("auto", "Training goal: knowledge, style or auto (as `ftf train --goal`).")
    system_prompt: str = setting("", "What the tuned model is for, in a sentence (kept with the project).")
    max_chunk_tokens: int = setting(512, "Largest ingest chunk, in tokens of the model's tokenizer.")
    provider_preset: str = setting("ollama", "Generation provider kind (a preset of `ftf provider`).")
    provider_base_url: str = setting("", "Generation provider API root ending in /v1.")
    provider_model: str = setting("", "Model name as the provider knows it.")
    train: dict[str, Any] = setting({}, "TrainConfig overrides (dotted keys allowed, as `ftf plan` gives).")

    def problems(self) -> list[str]:
        out = []
        if not self.model.strip():
            out.append("model: choose the default model or give a local folder")
        elif (
            self.model.startswith(("/", "~", "."))
            and not (Path(self.model).expanduser() / "config.json").is_file()
        ):
            # a path typed on the Model step: say now, not when a job fails minutes later
            out.append(
                f"model: {self.model!r} is no Hugging Face model folder on this machine (no config.json)"
            )
        if self.goal not in ("auto", "knowledge", "style"):
            out.append(f"goal: {self.goal!r} is not auto, knowledge or style")
        if self.max_chunk_tokens < 16:
            out.append("max_chunk_tokens: must be >= 16")
        return out


def load(project: str) -> StudioSettings:
    """The project's wizard settings (defaults for what was never chosen)."""
    return from_dict(StudioSettings, paths.project_settings(project).get(KEY) or {}, "studio settings")


def save(project: str, changes: dict[str, Any]) -> StudioSettings:
    """Merge ``changes`` (field -> value; ``train`` is merged key by key) into the project's settings,
    validated as a whole before anything is written.

    Raises:
        ConfigError: an unknown field or a bad value (every problem at once).
    """
    current = to_dict(load(project))
    train = {**current["train"], **(changes.pop("train", None) or {})}
    merged = from_dict(StudioSettings, {**current, **changes, "train": train}, "studio settings")
    paths.project_settings(project, **{KEY: to_dict(merged)})
    return merged


def train_config(s: StudioSettings) -> dict[str, Any]:
    """The ``TrainConfig`` a Train start sends: the model and goal, then the applied overrides, dotted
    keys (``lora.r``) turned into nested sections."""
    out: dict[str, Any] = {"base_model": s.model, "goal": s.goal}
    for key, value in s.train.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def ingest_config(s: StudioSettings) -> dict[str, Any]:
    """The ``IngestConfig`` a Data step's ingest sends: chunks counted with the chosen model's tokenizer."""
    return {"tokenizer": s.model, "max_tokens": s.max_chunk_tokens}


def provider_config(s: StudioSettings) -> dict[str, Any]:
    """The ``ProviderConfig`` fields the wizard keeps (the key travels only in the request that uses it)."""
    return {"preset": s.provider_preset, "base_url": s.provider_base_url, "model": s.provider_model}


def write_key(project: str, key: str) -> Path:
    """Write a provider API key to the project's ``provider.key``, mode 0600 from its creation (the
    provider refuses a key file that group or others can read)."""
    path = paths.project_dir(project) / "provider.key"
    tmp = path.with_suffix(".key.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    tmp.replace(path)
    return path
