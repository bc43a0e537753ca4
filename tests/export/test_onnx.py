"""ONNX export: onnxruntime reproduces the trained model, batch and sequence axes are dynamic, and the
verification fails on a broken graph."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from finetuneflow.errors import ExportError, VerificationError
from finetuneflow.events import Emitter
from finetuneflow.export import onnx_export as ox
from finetuneflow.export.step import Context, ExportConfig

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def exported(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Context, dict[str, Any]]:
    """The shared tiny run exported once to ONNX (the context keeps the merged model + reference)."""
    out = tmp_path_factory.mktemp("onnx-out") / "out"
    ctx = Context(trained_run, out, ExportConfig(formats=["onnx"]), Emitter("export", None), {})
    return ctx, ox.export_onnx(ctx)


def test_export_is_verified_and_describes_itself(exported: tuple[Context, dict[str, Any]]) -> None:
    ctx, result = exported
    folder = ctx.out_dir / "onnx"
    v = result["verify"]
    assert v["passed"] and v["kind"] == "f32" and v["max_abs_diff"] <= 1e-4 and v["top1_agreement"] == 1.0
    assert v["greedy_match"] == 1.0 and max(v["batched"]["max_abs_diff"].values()) <= 1e-4
    assert result["path"] == str(folder / "model.onnx") and result["kv_cache"] is False
    assert result["inputs"] == ["input_ids", "attention_mask", "position_ids"] and not result["external_data"]
    for name in (
        "model.onnx",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "config.json",
    ):
        assert name in result["files"], name
    assert not [p for p in ctx.out_dir.iterdir() if p.name.startswith(".")]  # no temp folder left
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    assert {o.domain: o.version for o in model.opset_import}[""] == ctx.cfg.onnx_opset == result["opset"]
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input]
    assert dims == [["batch", "sequence"]] * 3  # both axes symbolic on every input


def test_batch_and_sequence_axes_are_dynamic(exported: tuple[Context, dict[str, Any]]) -> None:
    """Shapes never traced (3 rows of 1, 5 and 37 tokens; one row of 90) give each real position the
    merged model's logits."""
    ctx, _ = exported
    model, _ = ctx.merged()
    sess = ox.session(ctx.out_dir / "onnx")
    rng = np.random.default_rng(0)
    vocab = model.config.vocab_size
    for lengths in ([1, 5, 37], [90]):
        width = max(lengths)
        ids = rng.integers(0, vocab, (len(lengths), width))
        mask = (np.arange(width) < np.asarray(lengths)[:, None]).astype(np.int64)
        logits = ox.run_batch(sess, ids, mask)
        assert logits.shape == (len(lengths), width, vocab)
        for row, n in enumerate(lengths):
            with torch.no_grad():
                want = model(input_ids=torch.tensor(ids[row : row + 1, :n])).logits[0].numpy()
            assert np.abs(logits[row, :n] - want).max() <= 1e-4


def test_a_corrupted_weight_fails_verification(
    exported: tuple[Context, dict[str, Any]], tmp_path: Path
) -> None:
    ctx, _ = exported
    folder = tmp_path / "broken"
    shutil.copytree(ctx.out_dir / "onnx", folder)
    model = onnx.load(str(folder / "model.onnx"))
    from onnx import numpy_helper

    biggest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weight = numpy_helper.to_array(biggest).copy()
    weight.flat[: weight.size // 4] += 0.5
    biggest.CopyFrom(numpy_helper.from_array(weight, biggest.name))
    onnx.save(model, str(folder / "model.onnx"))
    with pytest.raises(VerificationError, match="ONNX export failed verification: max \\|logit diff\\|"):
        ox.verify_onnx(folder, ctx.reference())


def test_a_graph_that_ignores_padding_fails_the_batch_check(
    exported: tuple[Context, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, _ = exported
    sess = ox.session(ctx.out_dir / "onnx")
    real = ox.run_batch
    # a runtime that drops the attention mask (and so the position ids skipping the padding)
    monkeypatch.setattr(ox, "run_batch", lambda s, ids, mask: real(s, ids, np.ones_like(mask)))
    with pytest.raises(VerificationError, match="padded batch"):
        ox.check_batched(sess, ctx.reference())


def test_a_wrong_logits_fn_fails_the_check(
    exported: tuple[Context, dict[str, Any]], monkeypatch: Any
) -> None:
    ctx, _ = exported
    real = ox.onnx_logits_fn
    monkeypatch.setattr(ox, "onnx_logits_fn", lambda s: lambda ids: real(s)(ids) * 1.01)
    with pytest.raises(VerificationError):
        ox.verify_onnx(ctx.out_dir / "onnx", ctx.reference())


def test_a_folder_with_other_files_is_not_replaced(
    exported: tuple[Context, dict[str, Any]], tmp_path: Path
) -> None:
    ctx, _ = exported
    (tmp_path / "notes.txt").write_text("mine")
    model, tokenizer = ctx.merged()
    with pytest.raises(ExportError, match="holds other files"):
        ox.write_onnx(model, tokenizer, tmp_path, 18, replace=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_missing_packages_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(ExportError, match=r"needs onnxruntime: pip install 'finetuneflow\[onnx\]'"):
        ox.require_onnx()


def test_gguf_to_onnx_on_a_tiny_gguf(exported: tuple[Context, dict[str, Any]], tmp_path: Path) -> None:
    """The tiny run's F32 GGUF (our GGUF exporter) back through transformers' GGUF reader to ONNX."""
    gm = pytest.importorskip("finetuneflow.export.gguf_model")
    ctx, _ = exported
    cfg = ExportConfig(formats=["gguf"], gguf_types=["f32"], verify=False)
    gguf_ctx = Context(ctx.run_dir, tmp_path / "g", cfg, Emitter("export", None), {}, _cache=ctx._cache)
    gguf_path = Path(gm.export_gguf(gguf_ctx)["files"]["f32"]["path"])
    result = ox.gguf_to_onnx(gguf_path, tmp_path / "onnx", opset=18)
    v = result["verify"]
    assert v["passed"] and v["max_abs_diff"] <= 1e-4 and result["source"]["gguf"] == str(gguf_path)
    # the GGUF holds the trained weights: onnxruntime matches the trained model too
    sess = ox.session(tmp_path / "onnx")
    ref = ctx.reference()
    assert np.abs(ox.onnx_logits_fn(sess)(ref.prompts[0]) - ref.logits[0]).max() <= 1e-3


def test_cli_from_gguf_reports_errors(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from finetuneflow.cli.export import register

    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(
        app, ["onnx", "from-gguf", str(tmp_path / "none.gguf"), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "GGUF file not found" in result.output
    result = CliRunner().invoke(app, ["onnx", "from-gguf", "x.gguf", "-o", "o", "--opset", "9"])
    assert result.exit_code == 2 and "--opset must be in 14..23" in result.output


@pytest.mark.slow
def test_gguf_to_onnx_on_the_default_model(default_model: Path, tmp_path: Path) -> None:
    """SmolLM2-135M's Q4_1 GGUF (dequantized once), exported and verified; the CLI prints the verdict."""
    import typer
    from typer.testing import CliRunner

    from finetuneflow.cli.export import register
    from finetuneflow.models.resolve import default_gguf

    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(
        app, ["onnx", "from-gguf", str(default_gguf()), "-o", str(tmp_path / "onnx"), "--json"]
    )
    assert result.exit_code == 0, result.output
    import json

    data = json.loads(result.stdout)  # stderr has the GGUF reader's progress bars
    assert data["verify"]["passed"] and data["verify"]["max_abs_diff"] <= 1e-3
    assert data["source"]["model_dir"] == str(default_model)  # the session's conversion, not a new one
    assert (tmp_path / "onnx" / "model.onnx").is_file() and (tmp_path / "onnx" / "tokenizer.json").is_file()
