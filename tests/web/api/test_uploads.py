"""Hostile uploads: path tricks, NUL, hidden files, zip bombs, types disguised by their extension,
oversize files (declared or streamed), a disk too full for them. Each gets a clear 4xx (a 507 for
the disk), and nothing is ever written outside the project's raw/ (the whole state folder is
compared before and after)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import QUICKSTART
from fastapi.testclient import TestClient

from finetuneflow import paths
from web.api.conftest import make_client


@pytest.fixture
def up(ftf_home: Path, project: str) -> Iterator[TestClient]:
    """A client with a 1 MB upload limit and the project created."""
    c = make_client(max_upload_mb=1.0)
    assert c.post("/api/projects", json={"name": project}).status_code == 201
    yield c


def _outside_raw(home: Path, project: str) -> dict[str, int]:
    raw = paths.project_dir(project) / "raw"
    db = ("ftf.db", "ftf.db-wal", "ftf.db-shm", "ftf.db-journal")  # the database changes, of course
    return {str(p): p.stat().st_size for p in home.rglob("*")
            if p.is_file() and not p.is_relative_to(raw) and p.name not in db}  # fmt: skip


def _send(c: TestClient, project: str, *files: tuple[str, bytes]) -> tuple[int, object]:
    r = c.post(f"/api/projects/{project}/files", files=[("files", (n, b, "text/plain")) for n, b in files])
    return r.status_code, r.json()


def _uploads(project: str) -> list[str]:
    folder = paths.project_dir(project) / "raw" / "uploads"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _raw_multipart(c: TestClient, project: str, filename: bytes, data: bytes) -> tuple[int, object]:
    """A body written by hand: a client library would percent-encode what a hostile one sends as is."""
    body = b'--B\r\nContent-Disposition: form-data; name="files"; filename="' + filename + b'"\r\n\r\n'
    body += data + b"\r\n--B--\r\n"
    r = c.post(
        f"/api/projects/{project}/files",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=B"},
    )
    return r.status_code, r.json()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_path_tricks_are_reduced_to_a_plain_name_inside_uploads(
    up: TestClient, project: str, ftf_home: Path
) -> None:
    before = _outside_raw(ftf_home, project)
    names = [
        "../../../evil.md",
        "/etc/passwd.txt",
        "..\\..\\win.md",
        "a/../../b.md",
        "ｆｕｌｌ／ｗｉｄｔｈ.md",
    ]
    status, body = _send(up, project, *[(n, b"# hi\n\nsome text\n") for n in names])
    assert status == 201, body
    assert [f["name"] for f in body] == ["evil.md", "passwd.txt", "win.md", "b.md", "width.md"]  # type: ignore[index]
    assert all(f["renamed_from"] for f in body)  # type: ignore[union-attr]
    assert _uploads(project) == ["b.md", "evil.md", "passwd.txt", "width.md", "win.md"]
    assert _outside_raw(ftf_home, project) == before
    assert not any((paths.project_dir(project) / "raw" / ".incoming").iterdir())  # no part left behind


def test_names_that_cannot_be_made_safe_are_refused(up: TestClient, project: str) -> None:
    cases = [
        ("a\x00b.md", "control characters"),
        ("a\nb.md", "control characters"),
        (".bashrc", "hidden files"),
        ("../.ssh/x.md", None),
        ("///", "no usable characters"),
    ]
    for name, words in cases:
        status, body = _raw_multipart(up, project, name.encode(), b"text\n")
        if words is None:  # '../.ssh/x.md' is just x.md once the path is gone
            assert status == 201 and body[0]["name"] == "x.md"  # type: ignore[index]
            continue
        assert status == 400 and words in body["error"]["message"], body  # type: ignore[index]
    assert _uploads(project) == ["x.md"]


def test_a_collision_takes_a_suffix_and_never_replaces(up: TestClient, project: str) -> None:
    for content in (b"one\n", b"two\n", b"three\n"):
        assert _send(up, project, ("same.txt", content))[0] == 201
    folder = paths.project_dir(project) / "raw" / "uploads"
    assert [(folder / n).read_bytes() for n in ("same.txt", "same-2.txt", "same-3.txt")] == [
        b"one\n",
        b"two\n",
        b"three\n",
    ]


def test_the_type_comes_from_the_content_not_the_name(up: TestClient, project: str, ftf_home: Path) -> None:
    before = _outside_raw(ftf_home, project)
    pdf = (QUICKSTART / "data" / "troubleshooting.pdf").read_bytes()
    status, body = _send(up, project, ("notes.txt", pdf))  # a PDF named .txt is stored as the PDF it is
    assert status == 201 and body[0]["name"] == "notes.pdf" and body[0]["kind"] == ".pdf"  # type: ignore[index]
    refused = {
        "program.txt": b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4,  # binary named as text
        "report.pdf": b"just some text pretending to be a PDF\n",  # text named as a PDF
        "archive.md": _zip({"a.txt": b"hello"}),  # a plain zip named .md
        "tool.exe": b"MZ\x90\x00" + b"\x00" * 200,
    }
    for name, data in refused.items():
        status, body = _send(up, project, (name, data))
        assert status == 415 and body["error"]["code"] == "unsupported_type", (name, body)  # type: ignore[index]
    assert _uploads(project) == ["notes.pdf"]
    assert _outside_raw(ftf_home, project) == before


def test_a_zip_bomb_is_refused_before_anything_unpacks_it(up: TestClient, project: str) -> None:
    # a "DOCX" whose one member inflates 15 MB of zeros from a few KB: the central directory says so
    bomb = _zip({"word/document.xml": b"<w/>", "word/media/big.bin": b"\x00" * (15 * 2**20)})
    assert len(bomb) < 2**20
    status, body = _send(up, project, ("report.docx", bomb))
    assert status == 413 and body["error"]["code"] == "zip_bomb", body  # type: ignore[index]
    assert "zip bomb" in body["error"]["message"] and "MB" in body["error"]["message"]  # type: ignore[index]
    assert _uploads(project) == []


def test_oversize_files_are_refused_naming_the_limit_and_setting(
    up: TestClient, project: str, ftf_home: Path
) -> None:
    before = _outside_raw(ftf_home, project)
    status, body = _send(up, project, ("big.txt", b"a" * (2**20 + 10)))
    assert status == 413, body
    assert "1 MB" in body["error"]["message"] and "max_upload_mb" in body["error"]["message"]  # type: ignore[index]

    def streamed() -> Iterator[bytes]:  # chunked: no Content-Length to refuse early
        yield b'--B\r\nContent-Disposition: form-data; name="files"; filename="s.txt"\r\n\r\n'
        for _ in range(40):
            yield b"b" * 65536
        yield b"\r\n--B--\r\n"

    r = up.post(f"/api/projects/{project}/files", content=streamed(),
                headers={"content-type": "multipart/form-data; boundary=B"})  # fmt: skip
    assert r.status_code == 413 and "max_upload_mb" in r.json()["error"]["message"]
    assert _uploads(project) == [] and not any((paths.project_dir(project) / "raw" / ".incoming").iterdir())
    assert _outside_raw(ftf_home, project) == before


def test_an_upload_needs_a_project_and_a_multipart_file(up: TestClient, project: str) -> None:
    assert up.post("/api/projects/nope/files", files=[("files", ("a.md", b"x"))]).status_code == 404
    r = up.post(f"/api/projects/{project}/files", content=b"raw", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "not_multipart"
    r = up.post(f"/api/projects/{project}/files", data={"field": "value"}, files=[("other", ("", b""))])
    assert r.status_code == 400
    assert (
        up.post(f"/api/projects/{project}/files", files=[("files", ("e.md", b""))]).json()["error"]["code"]
        == "empty_file"
    )


def test_parts_left_by_a_server_killed_mid_upload_are_swept_by_the_next_upload(
    up: TestClient, project: str
) -> None:
    import os
    import time

    incoming = paths.project_dir(project) / "raw" / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    old, live = incoming / "0123456789abcdef.part", incoming / "fedcba9876543210.part"
    old.write_bytes(b"x" * 1000)
    live.write_bytes(b"y")  # another upload, still writing
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))
    assert _send(up, project, ("notes.txt", b"hello"))[0] == 201
    assert sorted(p.name for p in incoming.iterdir()) == [live.name]


def _disk_of(monkeypatch: pytest.MonkeyPatch, incoming: Path, room: int) -> None:
    """The upload folder's disk as one with ``room`` bytes free past the reserve, less what the
    parts being written take: the disk fills as the body arrives, as a real one would."""
    from finetuneflow.web import uploads

    total = uploads.DISK_RESERVE_BYTES + room

    def usage(_: object) -> SimpleNamespace:
        written = sum(p.stat().st_size for p in incoming.glob("*.part"))
        return SimpleNamespace(total=total * 4, used=total * 3 + written, free=total - written)

    monkeypatch.setattr(uploads.shutil, "disk_usage", usage)


def test_an_upload_that_would_fill_the_disk_is_refused_and_leaves_nothing(
    up: TestClient, project: str, ftf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from finetuneflow.web import uploads

    incoming = paths.project_dir(project) / "raw" / ".incoming"
    before = _outside_raw(ftf_home, project)
    _disk_of(monkeypatch, incoming, 300_000)
    status, body = _send(up, project, ("a.txt", b"a" * 200_000), ("b.txt", b"b" * 200_000))  # declared
    assert status == 507, body
    error = body["error"]  # type: ignore[index]
    assert error["code"] == "insufficient_storage" and "free" in error["message"]
    assert "delete old runs" in error["message"] and str(ftf_home) not in error["message"]

    monkeypatch.setattr(uploads, "CHECK_EVERY_BYTES", 65536)

    def streamed() -> Iterator[bytes]:  # chunked: the length is never said, so only watching helps
        for name in (b"c.txt", b"d.txt"):
            yield b'--B\r\nContent-Disposition: form-data; name="files"; filename="' + name + b'"\r\n\r\n'
            for _ in range(3):
                yield b"c" * 65536
            yield b"\r\n"
        yield b"--B--\r\n"

    r = up.post(f"/api/projects/{project}/files", content=streamed(),
                headers={"content-type": "multipart/form-data; boundary=B"})  # fmt: skip
    assert r.status_code == 507 and r.json()["error"]["code"] == "insufficient_storage"
    assert _uploads(project) == [] and not any(incoming.iterdir())
    assert _outside_raw(ftf_home, project) == before
    _disk_of(monkeypatch, incoming, 2**20)  # room again: the same upload goes through
    assert _send(up, project, ("a.txt", b"a" * 200_000))[0] == 201


def test_a_full_disk_anywhere_in_the_api_is_a_507_without_the_path(ftf_home: Path) -> None:
    import errno
    import os

    c = make_client()

    def full() -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(ftf_home / "runs" / "x" / "metrics.jsonl"))

    def denied() -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(ftf_home / "secret"))

    c.app.add_api_route("/api/test-full", full)  # type: ignore[attr-defined]
    c.app.add_api_route("/api/test-denied", denied)  # type: ignore[attr-defined]
    with c:
        r = c.get("/api/test-full")
        assert r.status_code == 507 and r.json()["error"]["code"] == "insufficient_storage"
        assert "full" in r.json()["error"]["message"] and str(ftf_home) not in r.text
        r = c.get("/api/test-denied")  # any other OS error stays an internal one, still without the path
        assert r.status_code == 500 and str(ftf_home) not in r.text
