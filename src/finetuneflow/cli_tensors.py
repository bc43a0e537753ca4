"""``ftf tensors combine`` and ``ftf onnx from-gguf``: file-level tools that need no project.

Thin wrappers over :func:`finetuneflow.export.tensors.combine` and
:func:`finetuneflow.export.onnx_export.gguf_to_onnx`; ``register(app)`` adds both groups to an app.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console()

tensors_app = typer.Typer(help="Work on safetensors files.", no_args_is_help=True)
onnx_app = typer.Typer(help="ONNX graphs of causal LMs (needs the 'onnx' extra).", no_args_is_help=True)

AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def register(app: typer.Typer) -> None:
    """Add the ``tensors`` and ``onnx`` command groups to ``app``."""
    app.add_typer(tensors_app, name="tensors")
    app.add_typer(onnx_app, name="onnx")


def _fail(err: Exception) -> None:
    console.print(f"[red]error:[/red] {err}")
    raise typer.Exit(2)


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
        _fail(err)
        return
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
        _fail(ValueError("--opset must be in 14..23 (18 suits onnxruntime >= 1.14)"))
    try:
        result = gguf_to_onnx(gguf, output, opset)
    except (ExportError, VerificationError, ModelError) as err:
        _fail(err)
        return
    v = result["verify"]
    summary = (
        f"wrote {result['path']} (opset {opset}, {result['bytes']:,} bytes; {result['note']})\n"
        f"verified with onnxruntime: max |logit diff| {v['max_abs_diff']:.2g}, "
        f"top-1 agreement {v['top1_agreement']:.3f}, padded batch {v['batched']['max_abs_diff']}"
    )
    _show(result, as_json, summary)
