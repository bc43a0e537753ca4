"""Hostile and broken EPUB / PPTX / XLSX files: each case runs against every format it applies to.

Invariants: a zip bomb is refused before anything is inflated; DTD entities are never expanded
(billion laughs stays small, XXE never reads a file); an encrypted Office file says to save it
without a password; a truncated or damaged package says it is damaged and how to repair it, and
never surfaces as an internal error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from finetuneflow.errors import ReaderError
from finetuneflow.ingest.readers import read_file
from ingest.files import write
from ingest.packages import (
    add_bomb,
    encrypt,
    flip_member_bytes,
    make_epub,
    make_pptx,
    make_xlsx,
    rewrite,
    with_doctype,
)

MAKERS: dict[str, Callable[[Path], Path]] = {".pptx": make_pptx, ".xlsx": make_xlsx, ".epub": make_epub}
# Where each format keeps text we can swap an entity reference into.
TEXT_PARTS = {
    ".pptx": ("ppt/slides/slide1.xml", "Proofing basics"),
    ".xlsx": ("xl/worksheets/sheet1.xml", "How warm should the cabinet be?"),
    ".epub": ("EPUB/ch1.xhtml", "Mix flour."),
}
LAUGHS = (
    '<!DOCTYPE r [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{n} "{f"&lol{n - 1};" * 10 if n > 1 else "&lol;" * 10}">' for n in range(1, 10))
    + "]>"
)


def made(tmp_path: Path, kind: str) -> Path:
    return MAKERS[kind](tmp_path / f"file{kind}")


@pytest.mark.parametrize("kind", list(MAKERS))
def test_zip_bomb_is_refused_before_unpacking(tmp_path: Path, kind: str) -> None:
    path = add_bomb(made(tmp_path, kind))
    assert path.stat().st_size < 1_000_000
    with pytest.raises(ReaderError, match=rf"^file\{kind}: looks like a zip bomb \(media/zeros\.bin expands"):
        read_file(path)


@pytest.mark.parametrize("kind", list(MAKERS))
def test_billion_laughs_is_not_expanded(tmp_path: Path, kind: str) -> None:
    part, text = TEXT_PARTS[kind]
    path = rewrite(made(tmp_path, kind), {part: with_doctype(LAUGHS, (text, f"{text} &lol9;"))})
    started = time.perf_counter()
    result = read_file(path)
    assert time.perf_counter() - started < 5
    assert "lollol" not in " ".join(r.text for r in result.records)


@pytest.mark.parametrize("kind", list(MAKERS))
def test_external_entities_are_never_read(tmp_path: Path, kind: str) -> None:
    secret = write(tmp_path, "secret.txt", "TOP SECRET")
    part, text = TEXT_PARTS[kind]
    doctype = f'<!DOCTYPE r [<!ENTITY xxe SYSTEM "file://{secret}">]>'
    path = rewrite(made(tmp_path, kind), {part: with_doctype(doctype, (text, f"{text} &xxe;"))})
    assert "TOP SECRET" not in " ".join(r.text for r in read_file(path).records)


@pytest.mark.parametrize(("kind", "app"), [(".pptx", "PowerPoint"), (".xlsx", "Excel")])
def test_encrypted_office_file_says_save_without_password(tmp_path: Path, kind: str, app: str) -> None:
    path = encrypt(made(tmp_path, kind))
    message = rf"^file\{kind}: this \{kind} file is encrypted \(password-protected\); open it in {app}"
    with pytest.raises(ReaderError, match=message + r".*save a copy\s+without a password"):
        read_file(path)


def test_encrypted_office_file_is_recognised_whatever_its_name(tmp_path: Path) -> None:
    path = encrypt(make_xlsx(tmp_path / "budget.xlsx")).rename(tmp_path / "budget")
    with pytest.raises(ReaderError, match=r"this Office file is encrypted \(password-protected\)"):
        read_file(path)


def test_legacy_office_file_is_still_called_legacy(tmp_path: Path) -> None:
    data = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(4096)
    with pytest.raises(ReaderError, match=r"legacy Office file.*save it as \.docx / \.pptx / \.xlsx"):
        read_file(write(tmp_path, "old.xls", data))


def test_drm_encrypted_epub_is_refused(tmp_path: Path) -> None:
    path = make_epub(tmp_path / "shop.epub")
    refs = "".join(
        f'<enc:EncryptedData><enc:CipherData><enc:CipherReference URI="EPUB/{name}"/></enc:CipherData>'
        "</enc:EncryptedData>"
        for name in ("ch1.xhtml", "ch2.xhtml", "ch3.xhtml", "nav.xhtml")
    )
    encryption = (
        '<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
        f'xmlns:enc="http://www.w3.org/2001/04/xmlenc#">{refs}</encryption>'
    )
    rewrite(path, {"META-INF/encryption.xml": encryption.encode()})
    with pytest.raises(ReaderError, match=r"DRM-protected.*DRM-free copy"):
        read_file(path)


@pytest.mark.parametrize("kind", list(MAKERS))
def test_truncated_package_is_damaged_not_an_internal_error(tmp_path: Path, kind: str) -> None:
    path = made(tmp_path, kind)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ReaderError, match=r"damaged zip package.*re-export or re-copy"):
        read_file(path)


@pytest.mark.parametrize("kind", list(MAKERS))
def test_damaged_main_part_names_it_and_the_fix(tmp_path: Path, kind: str) -> None:
    main = {".pptx": "ppt/presentation.xml", ".xlsx": "xl/workbook.xml", ".epub": "EPUB/content.opf"}[kind]
    path = rewrite(made(tmp_path, kind), {main: b"<broken"})
    with pytest.raises(ReaderError, match=rf"part {main} is damaged .*save it again|part {main} is damaged"):
        read_file(path)


@pytest.mark.parametrize(
    ("kind", "damage"),
    [(kind, "missing") for kind in MAKERS] + [(".pptx", "damaged"), (".xlsx", "damaged")],
)
def test_one_damaged_unit_is_a_problem_the_rest_is_kept(tmp_path: Path, kind: str, damage: str) -> None:
    """A slide, sheet or chapter that is missing (or, for XML parts, not well-formed) is one problem
    line; the other slides, sheets and chapters are read. (Chapters are HTML: libxml2 reads any.)"""
    part, _ = TEXT_PARTS[kind]
    result = read_file(rewrite(made(tmp_path, kind), {part: None if damage == "missing" else b"<not xml"}))
    assert result.records
    assert len(result.problems) == 1 and f"part {part} is {damage}" in result.problems[0]


@pytest.mark.parametrize("kind", list(MAKERS))
def test_corrupted_bytes_inside_a_member(tmp_path: Path, kind: str) -> None:
    """A bit flipped in a compressed member (bad CRC or inflate error): reported, never a crash."""
    path = made(tmp_path, kind)
    part, _ = TEXT_PARTS[kind]
    flip_member_bytes(path, part)
    try:
        result = read_file(path)
    except ReaderError as exc:
        assert "damaged" in str(exc)
    else:
        assert any("damaged" in problem for problem in result.problems)


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("deck.pptx", r"named \.pptx but is not a PowerPoint presentation \(looks like text"),
        ("book.xlsx", r"named \.xlsx but is not an Excel workbook \(looks like text.*save it as \.xlsx"),
        ("novel.epub", r"named \.epub but is not an EPUB e-book \(looks like text"),
    ],
)
def test_text_named_as_a_package_says_what_it_is(tmp_path: Path, name: str, says: str) -> None:
    with pytest.raises(ReaderError, match=says):
        read_file(write(tmp_path, name, "just some words"))


def test_zip_with_mimetype_of_another_format_is_not_an_epub(tmp_path: Path) -> None:
    path = rewrite(make_epub(tmp_path / "doc.epub"), {"mimetype": b"application/vnd.oasis.opendocument.text"})
    with pytest.raises(ReaderError, match="zip archives are not ingested"):
        read_file(path)


def test_deeply_nested_chapter_is_one_problem(tmp_path: Path) -> None:
    deep = "<html><body>" + "<div>" * 100_000 + "deep" + "</div>" * 100_000 + "</body></html>"
    result = read_file(rewrite(make_epub(tmp_path / "deep.epub"), {"EPUB/ch1.xhtml": deep.encode()}))
    assert len(result.records) == 2
    assert result.problems == ["chapter 4 (EPUB/ch1.xhtml): its elements are nested too deeply to read"]


@pytest.mark.parametrize("kind", [".pptx", ".xlsx"])
def test_deeply_nested_xml_part_is_damaged_not_a_crash(tmp_path: Path, kind: str) -> None:
    part, text = TEXT_PARTS[kind]
    nest = "<x>" * 100_000 + "</x>" * 100_000
    path = rewrite(made(tmp_path, kind), {part: lambda data: data.replace(text.encode(), nest.encode())})
    result = read_file(path)
    assert any(f"part {part} is damaged" in problem for problem in result.problems)


def test_a_spine_that_repeats_chapters_reads_each_once_in_first_order(tmp_path: Path) -> None:
    plain = read_file(make_epub(tmp_path / "plain.epub"))
    again = '<itemref idref="chapter_1"/><itemref idref="missing"/><itemref idref="chapter_0"/></spine>'
    path = rewrite(
        make_epub(tmp_path / "repeats.epub"),
        {"EPUB/content.opf": lambda data: data.replace(b"</spine>", again.encode())},
    )
    result = read_file(path)
    assert [(r.text, r.meta) for r in result.records] == [(r.text, r.meta) for r in plain.records]
    assert len(result.records) == 3 and not result.problems
