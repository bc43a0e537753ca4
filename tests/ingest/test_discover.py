"""discover(): every file once, in sorted path order, without hidden entries or dependency folders."""

from __future__ import annotations

import os
from pathlib import Path

from finetuneflow.ingest.discover import SKIP_DIRS, discover
from finetuneflow.ingest.domains import COLLECTION_FILE


def _rglob_files(root: Path) -> list[str]:
    """The definition discover() must keep: sorted rglob, filtered by every part of the path."""
    out = []
    for file in sorted(root.rglob("*")):
        rel = file.relative_to(root)
        if any(p.startswith(".") or p in SKIP_DIRS for p in rel.parts) or file.name == COLLECTION_FILE:
            continue
        if file.is_file():
            out.append(str(Path(root.name) / rel))
    return out


def test_discover_matches_sorted_rglob(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    for rel in (
        "b.txt",
        "a/z.md",
        "a.txt",
        "a-b/c.txt",
        "a/b/c.txt",
        ".hidden/x.txt",
        "a/.secret.txt",
        "node_modules/pkg/readme.md",
        "x/__pycache__/m.py",
        f"coll/{COLLECTION_FILE}",
        "coll/one.txt",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("text")
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "far.txt").write_text("far")
    os.symlink(other, root / "linked-folder")  # a symlinked folder is not entered
    os.symlink(other / "far.txt", root / "linked.txt")  # a symlinked file is found (and checked later)
    os.symlink(root, root / "loop")  # a link back into the folder: given with a reason, not walked again
    walked = list(discover([root]))
    found = [c.name for c in walked if not c.skipped]
    assert found == _rglob_files(root)
    skipped = {c.name: c.skipped for c in walked if c.skipped}
    assert set(skipped) == {"docs/linked-folder", "docs/loop"}
    assert all("not followed" in why for why in skipped.values())
    assert found[:3] == ["docs/a/b/c.txt", "docs/a/z.md", "docs/a-b/c.txt"]
    assert "docs/linked.txt" in found and not any("far" in name for name in found)
    assert all(c.root == root and c.file == root / Path(c.name).relative_to("docs") for c in discover([root]))
