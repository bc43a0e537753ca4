"""Raw copies: byte-identical, packed per batch for small files, on their own for large ones."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from finetuneflow.ingest import raw


def _item(data: bytes, suffix: str = ".txt") -> tuple[str, str, bytes]:
    return hashlib.sha256(data).hexdigest(), suffix, data


def test_a_pack_holds_exact_bytes_and_is_written_once(tmp_path: Path) -> None:
    files = [_item(b"alpha\r\n\x00\xff"), _item("é".encode("latin-1"), ".CSV"), _item(b"")]
    stored = raw.keep_pack(tmp_path, files)
    assert len({s.split(raw.SEPARATOR)[0] for s in stored.values()}) == 1  # one pack for the batch
    for sha, _, data in files:
        assert raw.read_raw(stored[sha]) == data
    pack = Path(next(iter(stored.values())).split(raw.SEPARATOR)[0])
    with zipfile.ZipFile(pack) as zf:
        assert all(info.compress_type == zipfile.ZIP_STORED for info in zf.infolist())
    before = pack.stat().st_mtime_ns
    assert raw.keep_pack(tmp_path, list(reversed(files))) == stored  # same batch: same pack, untouched
    assert pack.stat().st_mtime_ns == before
    assert not list(tmp_path.glob(".*tmp"))


def test_large_files_get_their_own_copy_and_missing_members_are_reported(tmp_path: Path) -> None:
    sha, suffix, data = _item(b"x" * 100)
    path = raw.keep_file(tmp_path, data, sha, suffix)
    assert raw.read_raw(path) == data and raw.SEPARATOR not in path
    stored = raw.keep_pack(tmp_path, [_item(b"y")])
    pack = next(iter(stored.values())).split(raw.SEPARATOR)[0]
    with pytest.raises(FileNotFoundError, match="is not in"):
        raw.read_raw(f"{pack}{raw.SEPARATOR}0000000000000000.txt")


def test_ingest_packs_small_files_and_keeps_big_ones_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from finetuneflow import api
    from finetuneflow.ingest.config import IngestConfig
    from finetuneflow.state import File, session_scope

    monkeypatch.setattr("finetuneflow.ingest.prepare.PACK_MAX_FILE", 1000)
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(5):
        (folder / f"small{i}.txt").write_text(f"Small document number {i} about printers and labels.\n")
    (folder / "big.txt").write_text("A long document about the warranty. " * 60)
    api.ingest([folder], "raw", IngestConfig(workers=1))
    with session_scope() as s:
        rows = {Path(f.path).name: f.stored_as for f in s.query(File).all()}
    assert len(rows) == 6
    packs = {v.split(raw.SEPARATOR)[0] for k, v in rows.items() if k.startswith("small")}
    assert len(packs) == 1 and raw.SEPARATOR not in rows["big.txt"]
    for name, stored in rows.items():
        assert raw.read_raw(stored) == (folder / name).read_bytes()
