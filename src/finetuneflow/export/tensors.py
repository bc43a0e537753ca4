"""Combine safetensors files into one: shared names concatenated along the first axis.

Use it for shards of one tensor written apart (rows of an embedding, experts, a vocabulary split
over files) or for putting several adapters' tensors into one file. The rules:

- a name found in several inputs is concatenated along axis 0, in input order; its dtype and every
  other dimension must agree (a scalar cannot be concatenated);
- a name found in one input is carried over as it is;
- ``__metadata__`` is merged; a key given different values keeps the first and is reported.

Every problem is listed in one error that names the tensor, the files and the shapes. Inputs are
read through ``safetensors.safe_open`` a slice of rows at a time (at most ~64 MB held), and the
output is written in the safetensors layout (8-byte header length, JSON header, raw little-endian
data) under a temporary name and renamed, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import struct
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from finetuneflow.errors import TensorsError

CHUNK_BYTES = 64 * 1024 * 1024  # largest slice of a tensor held in memory while copying
# bits per element of the safetensors dtypes we copy (packed sub-byte floats are refused: their
# rows are not whole bytes in general)
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64,
}  # fmt: skip


@dataclass(frozen=True)
class Part:
    """One input's tensor of a given name."""

    source: int  # index into the inputs
    shape: tuple[int, ...]
    dtype: str


def combine(inputs: list[Path], output: Path) -> dict[str, Any]:
    """Write the tensors of ``inputs`` into ``output`` (see the module docstring for the rules).

    Returns what was written: tensor count, concatenated names with each part's first dimension,
    the merged metadata and its conflicts, the output size.

    Raises:
        TensorsError: no inputs, a missing or unreadable input, a dtype or shape conflict, or an
            unsupported dtype (all listed at once).
    """
    if not inputs:
        raise TensorsError("combine needs at least one .safetensors input")
    missing = [str(p) for p in inputs if not Path(p).is_file()]
    if missing:
        raise TensorsError(f"input files not found: {', '.join(missing)}")
    parts, metas = _scan(inputs)
    _check(parts, inputs)
    metadata, conflicts = merge_metadata(metas, inputs)
    # the order safetensors itself writes: widest dtype first (keeps data aligned), then by name
    names = sorted(parts, key=lambda n: (-DTYPE_BITS[parts[n][0].dtype], n))
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name in names:
        size = sum(_nbytes(p) for p in parts[name])
        shape, dtype = list(_shape(parts[name])), parts[name][0].dtype
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as out:
            _write_header(out, header)
            _copy_data(out, names, parts, inputs)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(output)  # atomic: readers see the old file or the whole new one
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "path": str(output),
        "inputs": [str(p) for p in inputs],
        "tensors": len(names),
        "concatenated": {n: [p.shape[0] for p in parts[n]] for n in names if len(parts[n]) > 1},
        "metadata": metadata,
        "metadata_conflicts": conflicts,
        "bytes": output.stat().st_size,
    }


def _scan(inputs: list[Path]) -> tuple[dict[str, list[Part]], list[dict[str, str]]]:
    """Names, shapes and dtypes of every input (headers only; no tensor data is read)."""
    from safetensors import SafetensorError, safe_open

    parts: dict[str, list[Part]] = {}
    metas: list[dict[str, str]] = []
    for i, path in enumerate(inputs):
        try:
            with safe_open(str(path), framework="pt") as f:
                metas.append(dict(f.metadata() or {}))
                for name in f.keys():  # noqa: SIM118 - safe_open has keys(), not iteration
                    sl = f.get_slice(name)
                    parts.setdefault(name, []).append(Part(i, tuple(sl.get_shape()), str(sl.get_dtype())))
        except (OSError, SafetensorError) as err:
            raise TensorsError(f"{path} is not a readable safetensors file: {err}") from None
    return parts, metas


def _check(parts: dict[str, list[Part]], inputs: list[Path]) -> None:
    problems = []
    for name, group in parts.items():
        where = ", ".join(f"{inputs[p.source].name} {p.dtype}{list(p.shape)}" for p in group)
        unknown = {p.dtype for p in group} - DTYPE_BITS.keys()
        if unknown:
            problems.append(f"{name}: unsupported dtype {sorted(unknown)} ({where})")
        elif len(group) == 1:
            continue
        elif len({p.dtype for p in group}) > 1:
            problems.append(f"{name}: dtypes differ ({where})")
        elif any(not p.shape for p in group):
            problems.append(f"{name}: a scalar cannot be concatenated along the first axis ({where})")
        elif len({p.shape[1:] for p in group}) > 1:
            problems.append(f"{name}: shapes differ beyond the first axis ({where})")
    if problems:
        raise TensorsError(f"cannot combine {len(problems)} tensors:\n  " + "\n  ".join(problems))


def merge_metadata(
    metas: list[dict[str, str]], inputs: list[Path]
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Union of the inputs' ``__metadata__``; for a key with different values the first is kept and
    the conflict reported as ``{"key", "kept", "kept_from", "ignored": {file: value}}``."""
    merged: dict[str, str] = {}
    origin: dict[str, int] = {}
    ignored: dict[str, dict[str, str]] = {}
    for i, meta in enumerate(metas):
        for key, value in meta.items():
            if key not in merged:
                merged[key], origin[key] = value, i
            elif merged[key] != value:
                ignored.setdefault(key, {})[str(inputs[i])] = value
    conflicts = [
        {"key": k, "kept": merged[k], "kept_from": str(inputs[origin[k]]), "ignored": v}
        for k, v in ignored.items()
    ]
    return merged, conflicts


def _shape(group: list[Part]) -> tuple[int, ...]:
    if len(group) == 1:
        return group[0].shape
    return (sum(p.shape[0] for p in group), *group[0].shape[1:])


def _nbytes(part: Part) -> int:
    count = 1
    for dim in part.shape:
        count *= dim
    return count * DTYPE_BITS[part.dtype] // 8


def _write_header(out: BinaryIO, header: dict[str, Any]) -> None:
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)  # pad with spaces so the data starts 8-byte aligned
    out.write(struct.pack("<Q", len(raw)))
    out.write(raw)


def _copy_data(out: BinaryIO, names: list[str], parts: dict[str, list[Part]], inputs: list[Path]) -> None:
    """Each tensor's bytes, part after part (row-major data concatenates along axis 0 as bytes)."""
    from safetensors import safe_open

    with ExitStack() as stack:
        files = [stack.enter_context(safe_open(str(p), framework="pt")) for p in inputs]
        for name in names:
            for part in parts[name]:
                f = files[part.source]
                if not part.shape or _nbytes(part) <= CHUNK_BYTES:
                    _write_tensor(out, f.get_tensor(name))
                    continue
                rows = max(1, CHUNK_BYTES * part.shape[0] // _nbytes(part))
                sl = f.get_slice(name)
                for start in range(0, part.shape[0], rows):
                    _write_tensor(out, sl[start : start + rows])


def _write_tensor(out: BinaryIO, tensor: Any) -> None:
    import torch

    flat = tensor.contiguous().reshape(-1)
    if flat.numel():
        out.write(flat.view(torch.uint8).numpy().data)
