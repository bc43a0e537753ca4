"""ONNX export of a causal LM: ``torch.onnx.export(dynamo=True)``, proven with onnxruntime.

The graph maps ``input_ids``, ``attention_mask`` (and ``position_ids`` when the model takes them),
each (batch, sequence) int64 with both axes dynamic, to ``logits`` (batch, sequence, vocab) float.
It has no KV cache: every call recomputes the whole sequence, which suits scoring, classification
and short generations; a cached decoder would need past key/value inputs and outputs per layer.

The folder holds ``model.onnx`` (weights in ``model.onnx.data`` beside it once they pass protobuf's
2 GB limit), the tokenizer files, the chat template and ``config.json``. Before it counts as done,
onnxruntime (not torch) reloads it and must reproduce the trained model on the fixed prompts
(:mod:`finetuneflow.export.verify`), and a padded batch of two sequences of different lengths
must give every real position the logits the sequence gets alone.
"""

from __future__ import annotations

import inspect
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from finetuneflow.errors import VerificationError
from finetuneflow.export.verify import LogitsFn, Reference, check, require

if TYPE_CHECKING:
    from finetuneflow.export.step import Context

ONNX_DIR = "onnx"  # inside an export folder
MODEL_FILE = "model.onnx"
INSTALL_HINT = "pip install 'finetuneflow[onnx]'"
NO_CACHE_NOTE = "no KV cache: each call recomputes the whole sequence (past key/values are not inputs)"
KINDS = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}  # verify.py thresholds per dtype


def export_onnx(ctx: Context) -> dict[str, Any]:
    """``<out_dir>/onnx/``: the merged model as an ONNX graph with its tokenizer, verified.

    Raises:
        ExportError: onnx, onnxruntime or onnxscript is missing, or torch cannot export the model.
        VerificationError: onnxruntime's logits, stops or padded batches differ from the trained model's.
    """
    require_onnx()
    model, tokenizer = ctx.merged()
    target = ctx.out_dir / ONNX_DIR
    result = write_onnx(model, tokenizer, target, ctx.cfg.onnx_opset, replace=True)
    if ctx.cfg.verify:
        result["verify"] = verify_onnx(target, ctx.reference(), _kind(model))
    return _finish(result, target)


def gguf_to_onnx(gguf_path: Path, out_dir: Path, opset: int = 18) -> dict[str, Any]:
    """Convert a GGUF file to ``<out_dir>/model.onnx`` (+ tokenizer), verified against the
    dequantized model that transformers reads from the GGUF (converted once to safetensors).

    Raises:
        ModelError: the GGUF file is missing or unreadable.
        ExportError: the onnx packages are missing, ``out_dir`` holds other files, or export fails.
        VerificationError: onnxruntime does not reproduce the dequantized model.
    """
    from finetuneflow.export.step import stop_ids
    from finetuneflow.export.verify import reference
    from finetuneflow.models.load import load_causal_lm, load_tokenizer
    from finetuneflow.models.resolve import resolve_model

    require_onnx()
    check_target(out_dir)  # before the GGUF is dequantized (tens of seconds for a real model)
    folder = resolve_model(str(gguf_path))
    model, tokenizer = load_causal_lm(folder).eval(), load_tokenizer(folder)
    result = write_onnx(model, tokenizer, out_dir, opset, replace=False)
    ref = reference(model, tokenizer, stop_ids(tokenizer))
    result["verify"] = verify_onnx(out_dir, ref, _kind(model))
    result["source"] = {"gguf": str(Path(gguf_path).resolve()), "model_dir": str(folder)}
    return _finish(result, out_dir)


def require_onnx() -> None:
    """Raise ExportError naming the extra to install unless onnx, onnxruntime and onnxscript import."""
    from finetuneflow.errors import ExportError

    missing = []
    for module in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}: {INSTALL_HINT}")


def _logits_module(model: Any, with_positions: bool) -> Any:
    """forward(input_ids, attention_mask[, position_ids]) -> logits, with the KV cache off."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any = None) -> Any:
            extra = {"position_ids": position_ids} if with_positions else {}
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra
            ).logits

    return LogitsOnly().eval()


def write_onnx(model: Any, tokenizer: Any, target: Path, opset: int, *, replace: bool) -> dict[str, Any]:
    """Export ``model`` (and save ``tokenizer`` beside it) into ``target``, written whole or not at all.

    ``replace`` allows removing an earlier ``target``; without it only an empty folder or an
    earlier ONNX export (a ``model.onnx`` inside) is replaced.

    Raises:
        ExportError: ``target`` holds other files, or torch.onnx cannot export the model.
    """
    import torch

    from finetuneflow.errors import ExportError

    if not replace:
        check_target(target)
    with_positions = "position_ids" in inspect.signature(model.forward).parameters
    names = ["input_ids", "attention_mask"] + (["position_ids"] if with_positions else [])
    # (2, 16) example: a batch and a length of 1 would be specialised into the graph as constants
    ids = torch.zeros((2, 16), dtype=torch.long, device=model.device)
    args = (ids, torch.ones_like(ids)) + (
        (torch.arange(16, device=ids.device).repeat(2, 1),) * with_positions
    )
    axes = {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("sequence", min=1)}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        try:
            with torch.no_grad(), _quiet_export():
                program = torch.onnx.export(
                    _logits_module(model, with_positions), args, dynamo=True, opset_version=opset,
                    input_names=names, output_names=["logits"], dynamic_shapes={n: axes for n in names},
                    verbose=False,
                )  # fmt: skip
        except Exception as err:  # torch.export raises many types; the user needs the message
            raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {err}") from err
        assert program is not None  # dynamo=True always returns the program
        program.save(str(tmp / MODEL_FILE), external_data=None)  # None: external once over 2 GB
        tokenizer.save_pretrained(str(tmp))
        model.config.save_pretrained(str(tmp))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "path": str(target / MODEL_FILE),
        "opset": opset,
        "inputs": names,
        "outputs": ["logits"],
        "dynamic_axes": ["batch", "sequence"],
        "kv_cache": False,
        "note": NO_CACHE_NOTE,
        "external_data": (target / f"{MODEL_FILE}.data").is_file(),
    }


@contextmanager
def _quiet_export() -> Iterator[None]:
    # torch.onnx logs every torchvision op it skips and warns about its own internals (pytree,
    # axis renaming); none of it concerns the user, and real failures still raise
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*axis name.*", category=UserWarning)
            yield
    finally:
        logger.setLevel(level)


def check_target(target: Path) -> None:
    """Raise ExportError unless ``target`` is absent, empty, or an earlier ONNX export."""
    from finetuneflow.errors import ExportError

    if target.exists() and (
        not target.is_dir() or (any(target.iterdir()) and not (target / MODEL_FILE).is_file())
    ):
        raise ExportError(f"{target} exists and holds other files than an ONNX export; choose another folder")


def _kind(model: Any) -> str:
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return KINDS.get(dtype, dtype)


def _finish(result: dict[str, Any], folder: Path) -> dict[str, Any]:
    from finetuneflow.export.step import checksums

    result["bytes"] = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    result["files"] = checksums(folder)
    return result


def session(folder: Path) -> Any:
    """An onnxruntime CPU session over ``folder/model.onnx`` (external data is found beside it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initializers say nothing to a user
    return ort.InferenceSession(str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"])


def run_batch(sess: Any, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Logits (batch, sequence, vocab) float32 for int64 ``ids`` and ``mask`` of shape (batch, sequence).

    Position ids, when the graph takes them, count real tokens only (0 at each row's first real
    token), as transformers computes them for a left-padded batch.
    """
    feeds = {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64)}
    if any(i.name == "position_ids" for i in sess.get_inputs()):
        feeds["position_ids"] = np.where(mask > 0, np.cumsum(mask, axis=1) - 1, 1).astype(np.int64)
    return np.asarray(sess.run(["logits"], feeds)[0], dtype=np.float32)


def onnx_logits_fn(sess: Any) -> LogitsFn:
    """A LogitsFn over an onnxruntime session: one unpadded sequence."""

    def run(ids: list[int]) -> np.ndarray:
        row = np.asarray([ids], dtype=np.int64)
        return run_batch(sess, row, np.ones_like(row))[0]

    return run


def verify_onnx(folder: Path, ref: Reference, kind: str = "f32") -> dict[str, Any]:
    """Reload ``folder`` with onnxruntime and the tokenizer saved there; compare with ``ref``.

    Raises:
        VerificationError: the logits or stops differ beyond ``kind``'s thresholds, or a padded batch
            gives real positions other logits than the sequences alone.
    """
    from finetuneflow.export.step import stop_ids
    from finetuneflow.models.load import load_tokenizer

    sess = session(folder)
    verdict = require(check(ref, onnx_logits_fn(sess), kind, stop_ids(load_tokenizer(folder))), "ONNX export")
    verdict["batched"] = check_batched(sess, ref, kind)
    return verdict


def check_batched(sess: Any, ref: Reference, kind: str = "f32") -> dict[str, Any]:
    """Two sequences of different lengths in one batch, padded on the right and on the left: every
    real position must get the trained model's logits (the dynamic batch and sequence axes work).

    Raises:
        VerificationError: a real position's logits differ by more than ``kind`` allows.
    """
    from finetuneflow.export.verify import QUANTIZED_DEFAULT, THRESHOLDS

    long, short = sorted(range(len(ref.prompts)), key=lambda i: len(ref.prompts[i]))[::-1][:2]
    rows = [ref.prompts[long], ref.prompts[short]]
    if len(rows[1]) == len(rows[0]):  # logits of a prefix are the prefix of the logits (causal)
        rows[1] = rows[1][: max(1, len(rows[1]) // 2)]
    wants = [ref.logits[long][: len(rows[0])], ref.logits[short][: len(rows[1])]]
    width, pad = len(rows[0]), ref.prompts[long][0]
    diffs = {}
    # left padding needs position ids that skip the padding; a graph without them only takes right
    takes_positions = any(i.name == "position_ids" for i in sess.get_inputs())
    for side in ("right", "left") if takes_positions else ("right",):
        ids = np.full((2, width), pad, dtype=np.int64)
        mask = np.zeros((2, width), dtype=np.int64)
        for r, row in enumerate(rows):
            span = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
            ids[r, span], mask[r, span] = row, 1
        logits = run_batch(sess, ids, mask)
        got = [logits[r][mask[r] > 0] for r in range(2)]
        diffs[side] = max(float(np.abs(g - w).max()) for g, w in zip(got, wants, strict=True))
    limit = THRESHOLDS.get(kind, QUANTIZED_DEFAULT)[0] or 1.0
    worst = max(diffs.values())
    if not worst <= limit:  # also catches NaN
        raise VerificationError(
            f"ONNX export failed verification: a padded batch of lengths {[len(r) for r in rows]} gives "
            f"real positions logits {diffs} away from the trained model's (> {limit} allowed for {kind})"
        )
    return {
        "batch": 2,
        "lengths": [len(r) for r in rows],
        "max_abs_diff": {k: round(v, 6) for k, v in diffs.items()},
    }
