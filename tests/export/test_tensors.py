"""Combining safetensors files: concatenation along axis 0, carried names, metadata merge, conflicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from finetuneflow.errors import TensorsError
from finetuneflow.export import tensors as ts
from finetuneflow.export.tensors import combine


def _write(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str] | None = None) -> Path:
    save_file(tensors, str(path), metadata=meta)
    return path


def _meta(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def test_shared_names_concatenate_and_unique_names_carry_over(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    a = {"emb": torch.randn(3, 4, generator=g), "bias": torch.arange(5, dtype=torch.int64)}
    b = {"emb": torch.randn(2, 4, generator=g), "scale": torch.tensor(2.5, dtype=torch.bfloat16)}
    c = {"emb": torch.randn(0, 4, generator=g), "bias": torch.arange(2, dtype=torch.int64)}
    files = [_write(tmp_path / f"{n}.safetensors", t) for n, t in zip("abc", (a, b, c), strict=True)]
    result = combine(files, tmp_path / "out" / "all.safetensors")
    out = load_file(str(tmp_path / "out" / "all.safetensors"))
    assert set(out) == {"emb", "bias", "scale"} and result["tensors"] == 3
    assert torch.equal(out["emb"], torch.cat([a["emb"], b["emb"], c["emb"]]))
    assert torch.equal(out["bias"], torch.cat([a["bias"], c["bias"]]))
    assert out["scale"].dtype == torch.bfloat16 and out["scale"].shape == () and float(out["scale"]) == 2.5
    assert result["concatenated"] == {"bias": [5, 2], "emb": [3, 2, 0]}
    assert result["bytes"] == (tmp_path / "out" / "all.safetensors").stat().st_size
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["all.safetensors"]  # no temp file left


def test_large_tensors_are_copied_in_row_slices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ts, "CHUNK_BYTES", 3 * 8 * 2)  # 3 rows of 8 bf16 values per slice
    a = torch.randn(10, 8).to(torch.bfloat16)
    b = torch.randn(7, 8).to(torch.bfloat16)
    files = [_write(tmp_path / "a.safetensors", {"w": a}), _write(tmp_path / "b.safetensors", {"w": b})]
    combine(files, tmp_path / "o.safetensors")
    assert torch.equal(load_file(str(tmp_path / "o.safetensors"))["w"], torch.cat([a, b]))


def test_metadata_is_merged_and_conflicts_keep_the_first(tmp_path: Path) -> None:
    x = {"t": torch.zeros(1)}
    a = _write(tmp_path / "a.safetensors", x, {"format": "pt", "origin": "a"})
    b = _write(
        tmp_path / "b.safetensors", {"u": torch.zeros(1)}, {"format": "pt", "origin": "b", "extra": "1"}
    )
    c = _write(tmp_path / "c.safetensors", {"v": torch.zeros(1)}, {"origin": "c"})
    result = combine([a, b, c], tmp_path / "o.safetensors")
    assert _meta(tmp_path / "o.safetensors") == {"format": "pt", "origin": "a", "extra": "1"}
    assert result["metadata_conflicts"] == [
        {"key": "origin", "kept": "a", "kept_from": str(a), "ignored": {str(b): "b", str(c): "c"}}
    ]


@pytest.mark.parametrize(
    ("left", "right", "words"),
    [
        (torch.zeros(2, 3), torch.zeros(2, 4),
         "w: shapes differ beyond the first axis (a.safetensors F32[2, 3], b.safetensors F32[2, 4])"),
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float16),
         "w: dtypes differ (a.safetensors F32[2, 3], b.safetensors F16[2, 3])"),
        (torch.tensor(1.0), torch.tensor(2.0), "w: a scalar cannot be concatenated along the first axis"),
    ],
)  # fmt: skip
def test_conflicts_name_the_tensor_files_and_shapes(
    tmp_path: Path, left: torch.Tensor, right: torch.Tensor, words: str
) -> None:
    a = _write(tmp_path / "a.safetensors", {"w": left, "ok": torch.zeros(1)})
    b = _write(tmp_path / "b.safetensors", {"w": right, "ok": torch.zeros(2)})
    with pytest.raises(TensorsError) as err:
        combine([a, b], tmp_path / "o.safetensors")
    assert words in str(err.value) and "ok:" not in str(err.value)  # "ok" concatenates fine
    assert not (tmp_path / "o.safetensors").exists()


def test_every_conflict_is_listed_at_once(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.safetensors", {"p": torch.zeros(1, 2), "q": torch.zeros(1)})
    b = _write(tmp_path / "b.safetensors", {"p": torch.zeros(1, 3), "q": torch.zeros(1, dtype=torch.int32)})
    with pytest.raises(TensorsError, match=r"cannot combine 2 tensors:\n  p: .*\n  q: dtypes differ"):
        combine([a, b], tmp_path / "o.safetensors")


def test_bad_inputs_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(TensorsError, match="at least one"):
        combine([], tmp_path / "o.safetensors")
    with pytest.raises(TensorsError, match="not found: .*missing.safetensors"):
        combine([tmp_path / "missing.safetensors"], tmp_path / "o.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(TensorsError, match="junk.safetensors is not a readable safetensors file"):
        combine([tmp_path / "junk.safetensors"], tmp_path / "o.safetensors")


def test_an_existing_output_is_replaced_whole(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.safetensors", {"w": torch.ones(2, 2)})
    combine([a, a], a)  # the output may be an input: it is read before the rename
    assert torch.equal(load_file(str(a))["w"], torch.ones(4, 2))


def test_cli_combine(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from finetuneflow.cli.export import register

    app = typer.Typer()
    register(app)
    a = _write(tmp_path / "a.safetensors", {"w": torch.ones(1, 2)}, {"k": "1"})
    b = _write(tmp_path / "b.safetensors", {"w": torch.zeros(2, 2)}, {"k": "2"})
    out = tmp_path / "out.safetensors"
    result = CliRunner().invoke(app, ["tensors", "combine", str(a), str(b), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 1 tensors" in result.output and "concatenated along axis 0: w" in result.output
    assert "metadata 'k': kept '1'" in result.output
    assert load_file(str(out))["w"].shape == (3, 2)
    result = CliRunner().invoke(app, ["tensors", "combine", str(a), str(b), "-o", str(out), "--json"])
    assert json.loads(result.output)["concatenated"] == {"w": [1, 2]}
    bad = _write(tmp_path / "c.safetensors", {"w": torch.ones(1, 3)})
    result = CliRunner().invoke(app, ["tensors", "combine", str(a), str(bad), "-o", str(out)])
    assert result.exit_code == 2 and "shapes differ" in result.output
