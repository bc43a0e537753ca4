"""An Ollama Modelfile for the trained model: ``<out>/ollama/Modelfile`` plus the GGUF files it
names, side by side (hard links where possible), so ``ollama create NAME -f Modelfile`` works from
that folder.

- ``FROM``: the Ollama model the run started from with ``ADAPTER ./adapter-<type>.gguf`` (when the
  GGUF LoRA was exported), or the base GGUF file with that adapter, or else the merged model GGUF
  (the ``gguf`` format) without an adapter.
- ``TEMPLATE``: the Ollama base's own template layer, or the tokenizer's chat template translated
  into Go template syntax (ollama_template.py), proven by rendering both and comparing.
- ``PARAMETER stop`` for every end-of-turn token, ``num_ctx`` >= the trained length, ``SYSTEM``
  from the settings or the system prompt most training examples share.

The written file is parsed back with the rules of Ollama's own parser and must give the values we
meant to write; without an ``ollama`` binary that (and the template proof) is the check.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from finetuneflow.errors import ExportError, ModelfileError
from finetuneflow.export import ollama_template as ot
from finetuneflow.export.step import Context
from finetuneflow.state import runs as rf

COMMANDS = ("from", "adapter", "template", "system", "parameter", "message", "license",
            "draft", "renderer", "parser", "requires")  # fmt: skip
# docs/modelfile.md "Valid Parameters and Values": name -> type
PARAMETERS: dict[str, type] = {
    "mirostat": int, "mirostat_eta": float, "mirostat_tau": float, "num_ctx": int, "repeat_last_n": int,
    "repeat_penalty": float, "temperature": float, "seed": int, "stop": str, "num_predict": int,
    "top_k": int, "top_p": float, "min_p": float,
}  # fmt: skip
MIN_CONTEXT = 2048  # Ollama's long-standing default; a model trained on shorter rows still chats longer


def export_ollama(ctx: Context) -> dict[str, Any]:
    """Write and check ``<out>/ollama/Modelfile``; run ``ollama create`` when asked and installed.

    Raises:
        ExportError: no GGUF to point FROM at (the message names the format to add), an unknown
            chat template, a system prompt the template cannot carry, ``ollama create`` failing.
    """
    from finetuneflow.models.load import load_tokenizer
    from finetuneflow.models.ollama import ollama_source, parse_name

    config = rf.read_json(ctx.run_dir / rf.CONFIG)
    base_dir = Path(config["model_dir"])
    weights = ctx.run_dir / (rf.ADAPTER if (ctx.run_dir / rf.ADAPTER).is_dir() else rf.FULL_MODEL)
    tokenizer = load_tokenizer(weights)
    origin = ollama_source(base_dir)
    folder = ctx.out_dir / "ollama"
    folder.mkdir(parents=True, exist_ok=True)
    commands, where = _from_lines(ctx, folder, parse_name(origin["name"]).short if origin else None)
    template, proof = _template(tokenizer, origin)
    system, system_from = _system(ctx, config, proof.get("spec_system"))
    commands.append(("template", template))
    if system:
        commands.append(("system", system))
    commands += [("stop", s) for s in stops(tokenizer, origin)]
    commands += _params(origin, num_ctx(config, base_dir))
    text = modelfile_text(commands, ctx.run_dir.name)
    (folder / "Modelfile").write_text(text, encoding="utf-8")
    parsed = parse_modelfile(text)
    if parsed != commands:
        raise ExportError(f"the Modelfile does not parse back to what was written: {parsed} != {commands}")
    _check_files(folder, parsed)
    result: dict[str, Any] = {"path": str(folder / "Modelfile"), **where, "system_from": system_from}
    result |= {"stops": [v for n, v in commands if n == "stop"], "template": proof}
    result["ollama_create"] = create(ctx.cfg.ollama_create, folder)
    return result


def _from_lines(
    ctx: Context, folder: Path, ollama_name: str | None
) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """FROM (and ADAPTER) lines with their files placed beside the Modelfile, and what was chosen."""
    from finetuneflow.export.gguf_model import source_gguf

    lora = ctx.results.get("gguf-lora")
    base_gguf = source_gguf(ctx.run_dir)
    merged = merged_gguf(ctx)
    if lora and ollama_name:
        adapter = _place(Path(lora["path"]), folder)
        return [("model", ollama_name), ("adapter", adapter)], {"from": "ollama model", "adapter": adapter}
    if lora and base_gguf is not None:
        base, adapter = _place(base_gguf, folder), _place(Path(lora["path"]), folder)
        return [("model", base), ("adapter", adapter)], {"from": "base GGUF", "adapter": adapter}
    if merged is not None:
        return [("model", _place(merged, folder))], {"from": "merged GGUF", "adapter": None}
    if ollama_name or base_gguf is not None:
        need = "'gguf-lora' (the adapter on the base) or 'gguf' (the merged model)"
    else:
        need = "'gguf' (the merged model; the base is not a GGUF file an adapter could go on)"
    raise ExportError(
        f"the Ollama export needs a GGUF to point FROM at: add {need} before 'ollama' in formats"
    )


def merged_gguf(ctx: Context) -> Path | None:
    """The merged-model GGUF of this export (the first type asked for), or None."""
    files = (ctx.results.get("gguf") or {}).get("files") or {}
    for kind in [t.lower() for t in ctx.cfg.gguf_types] + sorted(files):
        path = Path(files.get(kind, {}).get("path", ""))
        if path.suffix == ".gguf" and path.is_file():
            return path
    return None


def _place(path: Path, folder: Path) -> str:
    """Put ``path`` into ``folder`` (hard link, else copy) and return its Modelfile-relative name."""
    target = folder / path.name
    if target.resolve() != path.resolve():
        target.unlink(missing_ok=True)
        try:
            os.link(path, target)
        except OSError:  # another file system
            shutil.copy2(path, target)
    return f"./{path.name}"


def _template(tokenizer: Any, origin: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """(TEMPLATE text, how it was proven). An Ollama base's template is kept as it is."""
    if origin and origin.get("template"):
        template = str(origin["template"])
        try:
            found = ot.check_template(template, tokenizer)
        except ot.UnsupportedTemplate as err:
            found = {"note": f"not rendered: {err}"}
        return template, {"source": "ollama template layer", **found}
    try:
        spec = ot.family_spec(tokenizer)
        template = ot.go_template(spec)
    except ot.OllamaTemplateError as err:
        raise ExportError(str(err)) from None
    found = ot.check_template(template, tokenizer)
    if found["mismatches"] or not found["conversations"]:
        raise ExportError(
            f"the Ollama template translated for the {spec.family} family does not reproduce the "
            f"model's chat template: {'; '.join(found['mismatches']) or 'nothing compared'}"
        )
    return template, {"source": f"translated ({spec.family})", "spec_system": spec.system, **found}


def _system(ctx: Context, config: dict[str, Any], spec_system: str | None) -> tuple[str, str]:
    """(SYSTEM text, where it came from); refuses a system prompt the template cannot carry."""
    system, source = ctx.cfg.system, "settings"
    if not system:
        system, source = trained_system(Path(config.get("dataset", ""))), "training data"
    if not system:
        return "", "none"
    if spec_system == "none":
        raise ExportError(
            f"a system prompt ({source}) was asked for, but this model's chat template has no system "
            "role (it refuses one); leave `system` empty"
        )
    if '"""' in system:
        raise ExportError('the system prompt contains """, which a Modelfile cannot quote')
    return system, source


def trained_system(dataset_dir: Path) -> str:
    """The system prompt shared by more than half of the training chats ('' if none is)."""
    from finetuneflow.state.datasets import split_path

    path = split_path(dataset_dir, "chat", "train")
    if not path.is_file():
        return ""
    seen: Counter[str] = Counter()
    total = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        messages = json.loads(line).get("messages") or []
        total += 1
        if messages and messages[0].get("role") == "system":
            seen[str(messages[0].get("content", ""))] += 1
    if not seen:
        return ""
    text, count = seen.most_common(1)[0]
    return text if count * 2 > total else ""


def stops(tokenizer: Any, origin: dict[str, Any] | None) -> list[str]:
    """Every end-of-turn token of the tokenizer, then the Ollama base's own stop words."""
    from finetuneflow.models.chat import end_of_turn_tokens

    out = list(end_of_turn_tokens(tokenizer))
    extra = ((origin or {}).get("params") or {}).get("stop") or []
    out += [s for s in ([extra] if isinstance(extra, str) else extra) if s not in out]
    return out


def num_ctx(config: dict[str, Any], base_dir: Path) -> int:
    """The trained row length, or more: Ollama's default 2048 where the model allows it."""
    trained = int(config["train"]["max_len"])
    limit = int(json.loads((base_dir / "config.json").read_text()).get("max_position_embeddings") or trained)
    return max(trained, min(MIN_CONTEXT, limit))


def _params(origin: dict[str, Any] | None, ctx_len: int) -> list[tuple[str, str]]:
    """num_ctx, then the documented sampling parameters an Ollama base carried (stop excluded)."""
    base = (origin or {}).get("params") or {}
    out = [("num_ctx", str(max(ctx_len, int(base.get("num_ctx", 0)))))]
    for name, value in base.items():
        if name in PARAMETERS and name not in ("stop", "num_ctx") and not isinstance(value, list):
            out.append((name, str(value).lower() if isinstance(value, bool) else str(value)))
    return out


def _quote(value: str) -> str:
    if '"""' in value:
        raise ExportError(f'value {value[:40]!r} contains """, which a Modelfile cannot quote')
    if "\n" in value or '"' in value:
        return f'"""{value}"""'
    return f'"{value}"'


def modelfile_text(commands: list[tuple[str, str]], run_name: str) -> str:
    """The Modelfile: a comment, then one instruction per command (parameters by name)."""
    lines = [f"# FineTuneFlow run {run_name}: ollama create NAME -f Modelfile (from this folder)"]
    for name, value in commands:
        if name == "model":
            lines.append(f"FROM {value}")
        elif name in ("adapter", "template", "system", "license"):
            lines.append(f"{name.upper()} {_quote(value) if name != 'adapter' else value}")
        else:
            lines.append(f"PARAMETER {name} {_quote(value) if name == 'stop' else value}")
    return "\n".join(lines) + "\n"


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """Parse like Ollama's parser (parser/parser.go): instruction, then a bare, "quoted" or
    \"\"\"multi-line\"\"\" value; ``PARAMETER name value`` gives (name, value), FROM gives ("model", ...),
    ``MESSAGE role text`` gives ("message", "role: text").

    Raises:
        ModelfileError: unknown instruction or parameter, a value of the wrong type, an unclosed
            quote, a bad MESSAGE role, no FROM.
    """
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        line = text.count("\n", 0, pos) + 1
        if text[pos] in " \t\r\n":
            pos += 1
            continue
        if text[pos] == "#":
            pos = text.find("\n", pos) if "\n" in text[pos:] else len(text)
            continue
        end = pos
        while end < len(text) and text[end].isalpha():
            end += 1
        word = text[pos:end].lower()
        if word not in COMMANDS or end >= len(text) or text[end] not in " \t":
            raise ModelfileError(f"line {line}: unknown instruction {text[pos : end + 10]!r}")
        name, pos = word, end + 1
        if word in ("parameter", "message"):
            stop = pos
            while stop < len(text) and (text[stop].isalnum() or text[stop] == "_"):
                stop += 1
            name, pos = text[pos:stop], stop + 1
            if word == "message" and name not in ("system", "user", "assistant"):
                raise ModelfileError(f"line {line}: MESSAGE role must be system, user or assistant")
        value, pos = _value(text, pos, line)
        if word == "parameter":
            _check_parameter(name, value, line)
        if word == "message":  # as Ollama keeps it: "role: content"
            value = f"{name}: {value}"
        out.append(("model" if word == "from" else name if word == "parameter" else word, value))
    if not any(n == "model" for n, _ in out):
        raise ModelfileError("no FROM line")
    return out


def _value(text: str, pos: int, line: int) -> tuple[str, int]:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    for quote in ('"""', '"'):
        if text.startswith(quote, pos):
            close = text.find(quote, pos + len(quote))
            if close < 0 or (quote == '"' and "\n" in text[pos:close]):
                raise ModelfileError(f"line {line}: unclosed {quote}")
            return text[pos + len(quote) : close], close + len(quote)
    end = text.find("\n", pos) if "\n" in text[pos:] else len(text)
    return text[pos:end].strip(), end


def _check_parameter(name: str, value: str, line: int) -> None:
    kind = PARAMETERS.get(name)
    if kind is None:
        raise ModelfileError(f"line {line}: unknown parameter {name!r}; documented: {', '.join(PARAMETERS)}")
    try:
        kind(value)
    except ValueError:
        raise ModelfileError(
            f"line {line}: parameter {name} needs a {kind.__name__}, not {value!r}"
        ) from None


def _check_files(folder: Path, commands: list[tuple[str, str]]) -> None:
    for name, value in commands:
        if name in ("model", "adapter") and value.startswith("./") and not (folder / value).is_file():
            raise ExportError(f"the Modelfile's {name.upper()} {value} is not in {folder}")


def create(name: str, folder: Path) -> dict[str, Any]:
    """``ollama create NAME -f Modelfile`` in ``folder``; skipped (with why) without a name or binary.

    Raises:
        ExportError: ollama ran and failed (its output is in the message).
    """
    if not name:
        return {"status": "skipped", "reason": "ollama_create is empty"}
    binary = shutil.which("ollama")
    if binary is None:
        return {"status": "skipped", "reason": f"no `ollama` binary on PATH; run `ollama create {name} "
                f"-f Modelfile` in {folder} where Ollama is installed"}  # fmt: skip
    done = subprocess.run([binary, "create", name, "-f", "Modelfile"], cwd=folder, capture_output=True,
                          text=True, timeout=3600, check=False)  # fmt: skip
    if done.returncode != 0:
        raise ExportError(f"`ollama create {name}` failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return {"status": "created", "name": name}
