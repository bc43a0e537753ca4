"""``ftf export`` (a run's artefacts, each verified), and the file tools that need no project:
``ftf tensors combine`` and ``ftf onnx from-gguf``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from finetuneflow.cli.common import Command, ConfigFile, Project, RunId, console, fail, opt, settings

tensors_app = typer.Typer(help="Work on safetensors files.", no_args_is_help=True)
onnx_app = typer.Typer(help="ONNX graphs of causal LMs (needs the 'onnx' extra).", no_args_is_help=True)

AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def register(app: typer.Typer) -> None:
    """Add ``export`` and the ``tensors`` and ``onnx`` command groups to ``app``."""
    app.command("export", cls=Command)(export)
    app.add_typer(tensors_app, name="tensors")
    app.add_typer(onnx_app, name="onnx")


def export(
    project: Project = "default",
    run: RunId = None,
    format: Annotated[
        list[str] | None, opt("export", "formats", "--format", "-f", note="Repeatable.")
    ] = None,
    gguf_types: Annotated[str | None, opt("export", "gguf_types", note="Comma-separated.")] = None,
    ollama_create: Annotated[str | None, opt("export", "ollama_create")] = None,
    system: Annotated[str | None, opt("export", "system")] = None,
    verify: Annotated[bool | None, opt("export", "verify", "--verify/--no-verify")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: project's exports/<run>).")
    ] = None,
    config: ConfigFile = None,
) -> None:
    """Export adapter, merged model, GGUF (+ LoRA), Ollama Modelfile, ONNX, report, zip; each verified."""
    from finetuneflow import api
    from finetuneflow.cli.progress import RichProgress
    from finetuneflow.export.step import ExportConfig

    types = [t.strip().lower() for t in gguf_types.split(",") if t.strip()] if gguf_types else None
    try:
        cfg = settings(
            ExportConfig, config, formats=format, gguf_types=types, ollama_create=ollama_create,
            system=system, verify=verify,
        )  # fmt: skip
        with RichProgress() as sink:
            result = api.export(project, run, cfg, sink, out)
    except (ValueError, LookupError, RuntimeError) as err:
        fail(err)
    console.print(f"exported to [bold]{result['path']}[/bold]")
    for name, value in result.items():
        if isinstance(value, dict):
            console.print(f"  {name}: {value.get('path', '')}" + _verified_note(value))


def _verified_note(result: dict[str, Any]) -> str:
    """' (verified)' when every verification in an exporter's result passed."""
    found: list[bool] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if "passed" in value and "top1_agreement" in value:
                found.append(bool(value["passed"]))
            for inner in value.values():
                walk(inner)

    walk(result)
    return f" [green](verified: {len(found)} check(s))[/green]" if found and all(found) else ""


def _show(result: dict[str, Any], as_json: bool, summary: str) -> None:
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        console.print(summary)


@tensors_app.command("combine")
def combine_command(
    inputs: Annotated[list[Path], typer.Argument(help="Input .safetensors files, in concatenation order.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The .safetensors file to write.")],
    as_json: AsJson = False,
) -> None:
    """Combine safetensors files: shared names concatenated along the first axis, the rest carried over."""
    from finetuneflow.errors import TensorsError
    from finetuneflow.export.tensors import combine

    try:
        result = combine(inputs, output)
    except TensorsError as err:
        fail(err)
    lines = [f"wrote {result['tensors']} tensors ({result['bytes']:,} bytes) to {output}"]
    if result["concatenated"]:
        lines.append(f"concatenated along axis 0: {', '.join(result['concatenated'])}")
    for c in result["metadata_conflicts"]:
        lines.append(f"[yellow]metadata {c['key']!r}: kept {c['kept']!r}, ignored {c['ignored']}[/yellow]")
    _show(result, as_json, "\n".join(lines))


@onnx_app.command("from-gguf")
def from_gguf_command(
    gguf: Annotated[Path, typer.Argument(help="The .gguf model file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for model.onnx + tokenizer.")],
    opset: Annotated[int, typer.Option(help="ONNX opset (14..23).")] = 18,
    as_json: AsJson = False,
) -> None:
    """Convert a GGUF model to ONNX (dequantized to fp32), verified with onnxruntime."""
    from finetuneflow.errors import ExportError, ModelError, VerificationError
    from finetuneflow.export.onnx_export import gguf_to_onnx

    if not 14 <= opset <= 23:
        fail(ValueError("--opset must be in 14..23 (18 suits onnxruntime >= 1.14)"))
    try:
        result = gguf_to_onnx(gguf, output, opset)
    except (ExportError, VerificationError, ModelError) as err:
        fail(err)
    v = result["verify"]
    summary = (
        f"wrote {result['path']} (opset {opset}, {result['bytes']:,} bytes; {result['note']})\n"
        f"verified with onnxruntime: max |logit diff| {v['max_abs_diff']:.2g}, "
        f"top-1 agreement {v['top1_agreement']:.3f}, padded batch {v['batched']['max_abs_diff']}"
    )
    _show(result, as_json, summary)
