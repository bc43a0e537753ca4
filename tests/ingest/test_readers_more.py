"""Readers, part two: type sniffing, zip bombs, HTML, source code and the richer JSON shapes."""

from __future__ import annotations

import io
import json
import textwrap
import zipfile
from pathlib import Path

import pytest

from finetuneflow.errors import ReaderError
from finetuneflow.ingest import sniff as sniff_module
from finetuneflow.ingest.readers import READERS, SUPPORTED_EXTENSIONS, ReadResult, read_file
from finetuneflow.ingest.sniff import HEAD_BYTES, sniff
from finetuneflow.records import SourceRecord
from ingest.files import write


def pdf_bytes(text: str) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    pdf.add_page()
    pdf.multi_cell(0, 10, text)
    return bytes(pdf.output())


def docx_bytes(text: str) -> bytes:
    import docx

    document = docx.Document()
    document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def sniffed(path: Path) -> str:
    return sniff(path, path.read_bytes()[:HEAD_BYTES], READERS)


def only(result: ReadResult) -> SourceRecord:
    assert len(result.records) == 1, result
    return result.records[0]


# --- sniffing -------------------------------------------------------------------------------


def test_pdf_named_txt_is_read_as_pdf(tmp_path: Path) -> None:
    path = write(tmp_path, "report.txt", pdf_bytes("Quarterly numbers are up."))
    assert sniffed(path) == ".pdf"
    record = only(read_file(path))
    assert record.page == 1 and "Quarterly numbers are up." in record.text


def test_docx_without_extension_is_read_as_docx(tmp_path: Path) -> None:
    path = write(tmp_path, "handbook", docx_bytes("Welcome aboard."))
    assert sniffed(path) == ".docx"
    assert only(read_file(path)).text == "Welcome aboard."


def test_text_named_pdf_errors_clearly(tmp_path: Path) -> None:
    path = write(tmp_path, "fake.pdf", "just some words")
    with pytest.raises(ReaderError, match=r"^fake\.pdf: named \.pdf but is not a PDF \(looks like text\)"):
        read_file(path)


def test_binary_named_pdf_errors_clearly(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match=r"not a PDF \(looks like binary data\)"):
        read_file(write(tmp_path, "x.pdf", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"))


def test_text_named_docx_errors_clearly(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match=r"named \.docx but is not a Word document \(looks like text"):
        read_file(write(tmp_path, "notes.docx", "plain words"))


def test_plain_zip_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "hello")
    with pytest.raises(ReaderError, match="zip archives are not ingested"):
        read_file(write(tmp_path, "notes.txt", buffer.getvalue()))


def test_binary_with_unknown_extension_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="binary file"):
        read_file(write(tmp_path, "blob.bin", bytes(range(256)) * 4))


def test_legacy_office_file_is_refused(tmp_path: Path) -> None:
    data = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512)
    with pytest.raises(ReaderError, match=r"legacy Office file.*save it as \.docx"):
        read_file(write(tmp_path, "old.doc", data))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("<!DOCTYPE html><html><body><p>Hi</p></body></html>", ".html"),
        ("\n  <html><body><p>Hi</p></body></html>", ".html"),
        ('{"question": "Why?", "answer": "Because."}', ".json"),
        ('[{"text": "a"}]', ".json"),
        ("{not json at all", ".page"),
        ("plain words", ".page"),
    ],
)
def test_unknown_extension_sniffed_from_content(tmp_path: Path, content: str, expected: str) -> None:
    assert sniffed(write(tmp_path, "saved.page", content)) == expected


def test_known_extension_wins_over_text_content(tmp_path: Path) -> None:
    path = write(tmp_path, "snippet.txt", "<html><body><p>Shown as written.</p></body></html>")
    assert sniffed(path) == ".txt"
    assert only(read_file(path)).text.startswith("<html>")


def test_json_without_extension_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, "faq", json.dumps({"question": "Why?", "answer": "Because."}))
    assert only(read_file(path)).kind == "qa"


def test_unsupported_message_lists_documents_then_code(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match=r"supported: \.adoc, \.csv, .*; source code: \.c, \.cpp"):
        read_file(write(tmp_path, "slides.key", "words"))


def test_every_registered_type_is_supported() -> None:
    assert set(SUPPORTED_EXTENSIONS) == set(READERS)
    assert {".html", ".htm", ".xhtml", ".py", ".ts", ".yml", ".ini"} <= set(READERS)


# --- zip bombs ------------------------------------------------------------------------------


def bomb_docx(path: Path, member_mb: int, members: int = 1) -> Path:
    """A real DOCX with extra highly compressible members of ``member_mb`` MiB of zeros each."""
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with zipfile.ZipFile(io.BytesIO(docx_bytes("Innocent text."))) as real:
            for info in real.infolist():
                archive.writestr(info.filename, real.read(info))
        for number in range(members):
            with archive.open(f"word/media/zeros{number}.bin", "w", force_zip64=True) as member:
                for _ in range(member_mb):
                    member.write(chunk)  # streamed: memory stays at one chunk
    return path


def test_zip_bomb_by_compression_ratio_is_refused(tmp_path: Path) -> None:
    path = bomb_docx(tmp_path / "bomb.docx", member_mb=30)  # 30 MiB -> ~30 KB, ratio ~1000
    assert path.stat().st_size < 1_000_000
    with pytest.raises(ReaderError, match=r"^bomb\.docx: looks like a zip bomb \(word/media/zeros0\.bin"):
        read_file(path)


def test_zip_bomb_by_total_size_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each member is under the ratio rule's size floor; only the total is too large.
    monkeypatch.setattr(sniff_module, "MAX_ZIP_TOTAL_BYTES", 20 * 2**20)
    path = bomb_docx(tmp_path / "many.docx", member_mb=8, members=3)
    with pytest.raises(ReaderError, match=r"looks like a zip bomb \(2\d MB uncompressed, limit 20 MB\)"):
        read_file(path)


def test_zip_bomb_by_member_count_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "crowded.docx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("word/document.xml", "<w:document/>")
        for number in range(10_001):
            archive.writestr(f"p/{number}", "")
    with pytest.raises(ReaderError, match=r"looks like a zip bomb \(10002 members, limit 10000\)"):
        read_file(path)


def test_docx_under_the_limits_is_read(tmp_path: Path) -> None:
    path = bomb_docx(tmp_path / "fine.docx", member_mb=2)  # compressible, but small
    assert only(read_file(path)).text == "Innocent text."


# --- HTML -----------------------------------------------------------------------------------

PAGE = """<!DOCTYPE html>
<html><head><title>  Refund   policy </title><style>p { color: red }</style>
<script>var tracking = "SCRIPT TEXT";</script></head>
<body class="has-sidebar">
<header><a href="/">HEADER LOGO</a></header>
<nav><ul><li>NAV HOME</li><li>NAV PRICING</li></ul></nav>
<div id="cookie-banner">COOKIE CONSENT</div>
<div class="main-menu">MENU ITEMS</div>
<article>
  <h1>Refunds</h1>
  <p>You can ask for a refund
     within <b>30 days</b>.</p>
  <h2>How</h2>
  <ul><li>Open the app</li><li>Tap <em>Refund</em>
    <ol><li>Pick the order</li></ol></li></ul>
  <table><tr><th>Plan</th><th>Window</th></tr><tr><td>Basic</td><td>30 days</td></tr></table>
  <div class="unavailable-note">Line one<br>line two</div>
  <aside>ASIDE RELATED</aside>
  <form><label>FORM LABEL</label></form>
</article>
<div class="sidebar">SIDEBAR LINKS</div>
<footer>FOOTER COPYRIGHT</footer>
<noscript>NOSCRIPT TEXT</noscript>
</body></html>
"""


def test_html_keeps_article_and_drops_furniture(tmp_path: Path) -> None:
    record = only(read_file(write(tmp_path, "refunds.html", PAGE)))
    assert record.kind == "text"
    assert record.meta["title"] == "Refund policy"
    assert record.text == (
        "# Refunds\n\nYou can ask for a refund within 30 days.\n\n## How\n\n"
        "- Open the app\n- Tap Refund\n  - Pick the order\n\n"
        "Plan | Window\nBasic | 30 days\n\nLine one\nline two"
    )
    for absent in (
        "HEADER",
        "NAV",
        "COOKIE",
        "MENU",
        "ASIDE",
        "FORM",
        "SIDEBAR",
        "FOOTER",
        "SCRIPT",
        "color",
    ):
        assert absent not in record.text


def test_html_prefers_main_over_the_rest_of_the_body(tmp_path: Path) -> None:
    page = "<body><div>Promo strip</div><main><p>Main text.</p></main><div>Other</div></body>"
    assert only(read_file(write(tmp_path, "m.htm", page))).text == "Main text."


def test_html_without_main_keeps_body_text(tmp_path: Path) -> None:
    page = "<html><body><div class='content'>Loose text <a href='#'>link</a>.</div><p>Para.</p></body></html>"
    record = only(read_file(write(tmp_path, "b.xhtml", page)))
    assert record.text == "Loose text link.\n\nPara."
    assert "title" not in record.meta


def test_html_cp1252_is_decoded(tmp_path: Path) -> None:
    page = "<html><body><p>Crème brûlée – déjà vu.</p></body></html>".encode("cp1252")
    record = only(read_file(write(tmp_path, "fr.html", page)))
    assert record.text == "Crème brûlée – déjà vu." and record.meta["encoding"] == "cp1252"


def test_html_with_only_navigation_errors(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="no readable text"):
        read_file(
            write(tmp_path, "nav.html", "<html><body><nav>Home</nav><script>x()</script></body></html>")
        )


# --- source code ----------------------------------------------------------------------------

MODULE = textwrap.dedent(
    '''\
    """Module docstring."""

    import functools


    def add(a: int, b: int = 1) -> int:
        """Add two numbers."""
        return a + b


    def undocumented():
        return None


    class Greeter(Base, metaclass=Meta):
        """Say hello to people."""

        @functools.cache
        def greet(self, name: str) -> str:
            """Return a greeting for name.

            Never raises.
            """
            return f"hello {name}"

        def _private(self):
            return 1


    async def fetch(url):
        """Fetch a URL."""
        ...
    '''
)


def test_python_units_have_symbols_lines_and_both_directions(tmp_path: Path) -> None:
    result = read_file(write(tmp_path, "mod.py", MODULE))
    whole, *units = result.records
    assert (whole.kind, whole.meta) == ("text", {"language": "python"}) and whole.text == MODULE.rstrip()
    assert [(r.meta["symbol"], r.meta["unit"], r.line) for r in units] == [
        ("add", "doc->code", 6),
        ("add", "code->doc", 6),
        ("Greeter", "doc->code", 15),
        ("Greeter", "code->doc", 15),
        ("Greeter.greet", "doc->code", 19),
        ("Greeter.greet", "code->doc", 19),
        ("fetch", "doc->code", 30),
        ("fetch", "code->doc", 30),
    ]
    assert all(r.kind == "qa" and r.meta["lineno"] == r.line for r in units)


def test_python_doc_to_code_pair(tmp_path: Path) -> None:
    units = read_file(write(tmp_path, "mod.py", MODULE)).records[1:]
    greet = next(r for r in units if r.meta == {"symbol": "Greeter.greet", "lineno": 19, "unit": "doc->code"})
    assert greet.messages == [
        {
            "role": "user",
            "content": "Write the method `def greet(self, name: str) -> str` of class `Greeter`: "
            "Return a greeting for name.\n\nNever raises.",
        },
        {
            "role": "assistant",
            "content": "@functools.cache\ndef greet(self, name: str) -> str:\n"
            '    """Return a greeting for name.\n\n    Never raises.\n    """\n    return f"hello {name}"',
        },
    ]
    add = units[0]
    assert add.messages and add.messages[0]["content"] == (
        "Write the function `def add(a: int, b: int=1) -> int`: Add two numbers."
    )


def test_python_code_to_doc_pair_hides_the_docstring(tmp_path: Path) -> None:
    units = read_file(write(tmp_path, "mod.py", MODULE)).records[1:]
    add = units[1]
    assert add.messages == [
        {
            "role": "user",
            "content": "Explain what this code does:\n```python\n"
            "def add(a: int, b: int = 1) -> int:\n    return a + b\n```",
        },
        {"role": "assistant", "content": "Add two numbers."},
    ]
    fetch = units[7]
    assert fetch.messages and fetch.messages[0]["content"].endswith("async def fetch(url):\n    ...\n```")
    assert units[2].messages and units[2].messages[0]["content"].startswith(
        "Write the class `class Greeter(Base, metaclass=Meta)`: Say hello"
    )


def test_python_docstring_only_function_keeps_valid_body(tmp_path: Path) -> None:
    source = 'def stub():\n    """Do nothing yet."""\n'
    units = read_file(write(tmp_path, "stub.py", source)).records[1:]
    assert units[1].messages and "def stub():\n    ...\n```" in units[1].messages[0]["content"]


def test_python_syntax_error_names_the_line(tmp_path: Path) -> None:
    source = "def ok():\n    return 1\n\n\ndef broken(:\n    pass\n"
    with pytest.raises(ReaderError, match=r"^bad\.py: Python syntax error at line 5"):
        read_file(write(tmp_path, "bad.py", source))


@pytest.mark.parametrize(
    ("name", "language"),
    [("app.ts", "typescript"), ("main.go", "go"), ("q.sql", "sql"), ("ci.yml", "yaml"), ("x.H", "c")],
)
def test_other_source_files_are_one_text_record(tmp_path: Path, name: str, language: str) -> None:
    record = only(read_file(write(tmp_path, name, "line one  \r\nline two\n\n")))
    assert (record.kind, record.text, record.meta) == ("text", "line one\nline two", {"language": language})


def test_blank_source_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="only whitespace"):
        read_file(write(tmp_path, "empty.rs", "\n   \n"))


# --- JSON shapes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pair",
    [
        {"user": "Hi?", "assistant": "Hello."},
        {"human": "Hi?", "bot": "Hello."},
        {"input": "Hi?", "output": "Hello."},
    ],
)
def test_json_pair_shapes_become_qa(tmp_path: Path, pair: dict[str, str]) -> None:
    record = only(read_file(write(tmp_path, "p.jsonl", json.dumps(pair))))
    assert record.kind == "qa"
    assert record.messages == [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]


def test_instruction_still_wins_over_input_output(tmp_path: Path) -> None:
    row = {"instruction": "Translate", "input": "cheese", "output": "fromage"}
    record = only(read_file(write(tmp_path, "a.json", json.dumps(row))))
    assert record.messages and record.messages[0]["content"] == "Translate\n\ncheese"


def test_problem_solution_and_reasoning_sets(tmp_path: Path) -> None:
    rows = [
        {"problem": "2+2?", "solution": "4", "difficulty": "easy"},
        {"question": "3*3?", "reasoning": "Three threes are nine.", "answer": "9"},
        {"question": "1/0?", "reasoning": "Undefined.", "answer": ""},
    ]
    result = read_file(write(tmp_path, "math.json", json.dumps(rows)))
    first, second = result.records
    assert first.messages == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert first.meta == {"difficulty": "easy", "unit": "reasoning"}
    assert second.messages == [
        {"role": "user", "content": "3*3?"},
        {"role": "assistant", "content": "Three threes are nine.\n\nAnswer: 9"},
    ]
    assert second.meta == {"unit": "reasoning"}
    assert result.problems == ["item 3: empty answer"]


def test_conversations_and_facts(tmp_path: Path) -> None:
    document = {
        "conversations": [
            {
                "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
                "importance": "0.7",
                "tags": ["greeting"],
            }
        ],
        "facts": [
            "The office opens at 9.",
            {"fact": "Refunds take 30 days.", "importance": 0.9, "tags": ["billing", "refunds"]},
            {"text": "Support is 24/7."},
            {"importance": 1},
            42,
        ],
    }
    result = read_file(write(tmp_path, "kb.json", json.dumps(document)))
    conversation, *facts = result.records
    assert conversation.kind == "conversation"
    assert conversation.meta == {"importance": 0.7, "tags": ["greeting"]}
    assert [(f.kind, f.text, f.meta) for f in facts] == [
        ("text", "The office opens at 9.", {"unit": "fact"}),
        (
            "text",
            "Refunds take 30 days.",
            {"unit": "fact", "importance": 0.9, "tags": ["billing", "refunds"]},
        ),
        ("text", "Support is 24/7.", {"unit": "fact"}),
    ]
    assert [p.split(":")[0] for p in result.problems] == ["fact 4", "fact 5"]


def test_json_trailing_garbage_is_reported(tmp_path: Path) -> None:
    content = '{\n  "question": "Why?",\n  "answer": "Because."\n}\n<!-- exported by tool -->\n'
    result = read_file(write(tmp_path, "trail.json", content))
    assert only(result).kind == "qa"
    assert result.problems == ["trailing data after JSON document at line 5 column 1 ignored"]


def test_json_single_line_document_with_garbage_is_not_jsonl(tmp_path: Path) -> None:
    result = read_file(write(tmp_path, "t.json", '{"question": "Why?", "answer": "Because."} trailing'))
    assert only(result).kind == "qa"
    assert result.problems == ["trailing data after JSON document at line 1 column 44 ignored"]


def test_jsonl_named_json_is_still_read_as_lines(tmp_path: Path) -> None:
    lines = [json.dumps({"q": "a?", "a": "b"}), "{bad", json.dumps({"q": "c?", "a": "d"})]
    result = read_file(write(tmp_path, "rows.json", "\n".join(lines)))
    assert [r.line for r in result.records] == [1, 3]
    assert result.problems[0].startswith("line 2: invalid JSON")


def test_text_mentioning_pdf_magic_stays_text(tmp_path: Path) -> None:
    path = write(tmp_path, "notes.md", "# PDF notes\n\nEvery PDF starts with %PDF-1.7 in its header.\n")
    assert sniffed(path) == ".md"
