"""Stored signatures: tagged with their settings; stale ones are recomputed from the chunk text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select, update

from finetuneflow import api
from finetuneflow.events import Event
from finetuneflow.ingest.config import IngestConfig
from finetuneflow.ingest.store import decode_signature, encode_signature
from finetuneflow.state import Chunk, File, session_scope
from finetuneflow.text.dedup import DedupConfig, signature_tag, signatures

CFG = DedupConfig()
TAG = signature_tag(CFG)
TEXT = (
    "The proofing cabinet keeps dough at a steady humidity while the heater cycles, and the tray "
    "slides out for cleaning once the firmware reports the door gasket is dry enough to open."
)


def test_signature_round_trip_keeps_the_slots() -> None:
    sig = signatures([TEXT], CFG)[0]
    blob = encode_signature(sig, TAG)
    assert len(blob) == 4 * (CFG.num_perm + 1)
    decoded = decode_signature(blob, TAG, CFG.num_perm)
    assert decoded is not None and decoded.dtype == np.uint32 and np.array_equal(decoded, sig)


def test_signatures_of_other_settings_do_not_decode() -> None:
    sig = signatures([TEXT], CFG)[0]
    other = signature_tag(DedupConfig(seed=2))
    assert decode_signature(encode_signature(sig, other), TAG, CFG.num_perm) is None
    assert decode_signature(sig.tobytes(), TAG, CFG.num_perm) is None  # untagged: the old scheme
    untagged_longer = np.arange(CFG.num_perm + 1, dtype=np.uint32).tobytes()  # same length, no tag
    assert decode_signature(untagged_longer, TAG, CFG.num_perm) is None
    assert decode_signature(None, TAG, CFG.num_perm) is None
    assert decode_signature(b"", TAG, CFG.num_perm) is None


def test_stale_signatures_are_recomputed_on_load(tiny_model: Path, tmp_path: Path) -> None:
    cfg = IngestConfig(tokenizer=str(tiny_model), max_tokens=4096, overlap=16)
    src = tmp_path / "docs"
    src.mkdir()
    (src / "a.txt").write_text(TEXT)
    api.ingest([src], "p", cfg)
    # What a project from before the tagged scheme holds: 128 untagged values of another hash.
    old = np.random.default_rng(0).integers(0, 2**31, CFG.num_perm, dtype=np.uint32).tobytes()
    with session_scope() as s:
        s.execute(update(Chunk).values(minhash=old))
    (src / "b.txt").write_text(TEXT.replace("steady", "constant"))  # a near copy of a.txt
    events: list[Event] = []
    report = api.ingest([src], "p", cfg, on_event=events.append)
    assert report.dropped() == {"near duplicate": 1}
    assert any("recomputed 1 signature" in e.message for e in events)
    with session_scope() as s:
        blob = s.scalar(select(Chunk.minhash).join(File).where(File.path.endswith("a.txt")))
    stored = decode_signature(blob, TAG, CFG.num_perm)
    assert stored is not None and np.array_equal(stored, signatures([TEXT], CFG)[0])


def test_exact_keys_answer_like_a_dict_across_merges(monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib
    import random

    from finetuneflow.ingest import store

    monkeypatch.setattr(store, "_RECENT_KEYS", 7)  # merged into the sorted array every 7 keys
    monkeypatch.setattr(store, "_BLOCK", 16)  # digests over several blocks
    rng = random.Random(3)
    keys = [hashlib.sha1(str(rng.randrange(60)).encode()).digest() for _ in range(200)]
    keys[50:50] = [b"not-a-sha1", b"not-a-sha1"]  # other lengths take the plain dict
    # same first 8 bytes, other digests: told apart by the whole digest
    keys += [b"\x01" * 8 + b"\x02" * 12, b"\x01" * 8 + b"\x03" * 12]
    exact, reference = store._ExactKeys(), dict[bytes, list[int]]()
    for slot, key in enumerate(keys):
        assert exact.slots(key) == reference.get(key, [])
        exact.add(key, slot)
        reference.setdefault(key, []).append(slot)
    for key, slots in reference.items():
        assert exact.slots(key) == slots
    assert max(map(len, reference.values())) > 2


def test_forgetting_a_file_of_more_chunks_than_sqlite_takes_variables(
    tiny_model: Path, tmp_path: Path
) -> None:
    """A changed large file's old chunks are forgotten by one statement whatever their number: a
    bound id per chunk passed SQLite's variable limit (250,000 here, 32,766 in stock builds)."""
    import sqlite3

    from finetuneflow.ingest.store import forget_file_chunks

    doc = tmp_path / "manual.md"
    doc.write_text(
        "\n\n".join(f"Section {i}: the printer's part number {i * 7919} is kept here." for i in range(60))
    )
    api.ingest([doc], "p", IngestConfig(tokenizer=str(tiny_model), max_tokens=16, overlap=0, dedup=False))
    with session_scope() as s:
        (file_id,) = s.scalars(select(File.id)).all()
        count = len(s.scalars(select(Chunk.id).where(Chunk.file_id == file_id)).all())
        raw = s.connection().connection.driver_connection
        if not isinstance(raw, sqlite3.Connection):
            pytest.skip("the variable limit is SQLite's")
        raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, count // 2)  # as if the file were 2x the limit
        assert len(forget_file_chunks(s, file_id)) == count > 20
    with session_scope() as s:
        assert s.scalars(select(Chunk.id)).all() == []
