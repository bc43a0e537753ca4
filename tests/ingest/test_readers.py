"""Readers: each supported format built at test time, plus the ways real files go wrong."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from finetuneflow.errors import ReaderError
from finetuneflow.ingest.readers import READERS, SUPPORTED_EXTENSIONS, ReadResult, read_file
from ingest.files import write


def pdf_bytes(pages: list[str]) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 10, text)
    return bytes(pdf.output())


def encrypted_pdf(user_password: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes(["Secret page"]))))
    writer.encrypt(user_password=user_password, owner_password="owner-pw", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def only(result: ReadResult) -> str:
    assert len(result.records) == 1, result
    return result.records[0].text


# --- registry and dispatch -------------------------------------------------------------------


def test_registry_covers_supported_extensions() -> None:
    expected = {
        ".txt",
        ".md",
        ".markdown",
        ".rst",
        ".adoc",
        ".pdf",
        ".docx",
        ".csv",
        ".tsv",
        ".json",
        ".jsonl",
    }
    expected |= {".html", ".htm", ".xhtml", ".py", ".js", ".ts", ".go", ".rs", ".java", ".c", ".cpp", ".h"}
    expected |= {".rb", ".sh", ".sql", ".yaml", ".yml", ".toml", ".ini", ".mk", ".dockerfile"}
    expected |= {".epub", ".pptx", ".xlsx"}
    assert set(SUPPORTED_EXTENSIONS) == set(READERS) == expected


def test_extension_is_case_insensitive(tmp_path: Path) -> None:
    assert only(read_file(write(tmp_path, "NOTES.TXT", "hello"))) == "hello"


@pytest.mark.parametrize("name", ["slides.key", "archive.zip", ".env"])
def test_unsupported_extension(tmp_path: Path, name: str) -> None:
    """A dotfile (.env, likely secrets) is not read as text for want of an extension."""
    with pytest.raises(ReaderError, match="unsupported file type.*supported: .adoc, .csv"):
        read_file(write(tmp_path, name, "data"))
    if name == ".env":  # an ordinary name without an extension is text (ingest/sniff.extensionless)
        assert only(read_file(write(tmp_path, "README", "data"))) == "data"


@pytest.mark.parametrize("name", ["empty.txt", "empty.pdf", "empty.docx", "empty.jsonl"])
def test_zero_byte_file(tmp_path: Path, name: str) -> None:
    with pytest.raises(ReaderError, match=rf"^{name}: the file is empty \(0 bytes\)"):
        read_file(write(tmp_path, name, b""))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="not found"):
        read_file(tmp_path / "nope.txt")


# --- text -----------------------------------------------------------------------------------


def test_text_is_cleaned(tmp_path: Path) -> None:
    raw = "\ufeffTitle  \r\nline\x07 two\x1b\r\n\r\n\r\n\r\n\r\nﬁnal para\t \n"
    result = read_file(write(tmp_path, "a.txt", raw.encode("utf-8")))
    assert only(result) == "Title\nline two\n\nfinal para"
    assert result.records[0].kind == "text"
    assert result.records[0].meta["encoding"] == "utf-8"


def test_markdown_keeps_headings(tmp_path: Path) -> None:
    text = only(read_file(write(tmp_path, "guide.md", "# Setup\n\nRun **make**.\n")))
    assert text == "# Setup\n\nRun **make**."


def test_cp1252_text_is_decoded(tmp_path: Path) -> None:
    original = "Le garçon a mangé une crème brûlée à la fenêtre – déjà “parfait”.\n"
    result = read_file(write(tmp_path, "fr.txt", original.encode("cp1252")))
    assert only(result) == original.strip()
    assert result.records[0].meta["encoding"] == "cp1252"


def test_utf8_text_with_a_stray_cp1252_byte_keeps_its_utf8(tmp_path: Path) -> None:
    # a Windows quote pasted into UTF-8 text: the whole file used to be read as cp1252, every
    # UTF-8 accent turned into two letters ("café" became "cafÃ©")
    data = "Le café de Zürich, déjà ouvert. ".encode() + b"It\x92s open." + " Crème brûlée.".encode()
    result = read_file(write(tmp_path, "mixed.txt", data))
    assert only(result) == "Le café de Zürich, déjà ouvert. It’s open. Crème brûlée."
    assert result.records[0].meta["encoding"] == "utf-8+cp1252"


def test_utf8_cut_inside_its_last_character_keeps_the_rest(tmp_path: Path) -> None:
    data = "Señor Müller’s naïve résumé, ".encode() * 3 + "€".encode()[:2]
    text = only(read_file(write(tmp_path, "cut.txt", data)))
    assert text.startswith("Señor Müller’s naïve résumé, Señor") and "Ã" not in text[:-2]


@pytest.mark.parametrize("codec", ["cp1252", "latin-1"])
def test_legacy_text_with_one_utf8_looking_pair_stays_legacy(tmp_path: Path, codec: str) -> None:
    # "Ã©" in cp1252 is the bytes of UTF-8's "é": one such pair among many accents is not UTF-8
    original = "Le garçon a mangé une crème brûlée à la fenêtre, déjà, Ã© noté.\n"
    result = read_file(write(tmp_path, "fr.txt", original.encode(codec)))
    assert only(result) == original.strip()
    assert result.records[0].meta["encoding"] == "cp1252"


def test_whitespace_only_text(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="only whitespace"):
        read_file(write(tmp_path, "blank.txt", " \n\t\n"))


def test_binary_renamed_to_txt(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="binary"):
        read_file(write(tmp_path, "image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"))


# --- PDF ------------------------------------------------------------------------------------


def test_pdf_one_record_per_page(tmp_path: Path) -> None:
    path = write(tmp_path, "doc.pdf", pdf_bytes(["First page text.", "", "Third page text."]))
    result = read_file(path)
    assert [(r.kind, r.page) for r in result.records] == [("text", 1), ("text", 3)]
    assert "First page text." in result.records[0].text
    assert "Third page text." in result.records[1].text


def test_pdf_without_text_needs_ocr(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="no extractable text.*OCR"):
        read_file(write(tmp_path, "scan.pdf", pdf_bytes([""])))


def test_password_protected_pdf(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="password-protected"):
        read_file(write(tmp_path, "locked.pdf", encrypted_pdf("secret")))


def test_pdf_with_owner_password_only_is_read(tmp_path: Path) -> None:
    result = read_file(write(tmp_path, "restricted.pdf", encrypted_pdf("")))
    assert "Secret page" in only(result)


@pytest.mark.parametrize("cut", [0.5, 0.1])
def test_truncated_pdf(tmp_path: Path, cut: float) -> None:
    data = pdf_bytes(["Some text that will be cut off.", "More text."])
    with pytest.raises(ReaderError, match=r"^broken\.pdf: "):
        read_file(write(tmp_path, "broken.pdf", data[: int(len(data) * cut)]))


def test_text_renamed_to_pdf(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="not a valid PDF"):
        read_file(write(tmp_path, "fake.pdf", "just some words, not a PDF"))


# --- DOCX -----------------------------------------------------------------------------------


def test_docx_headings_paragraphs_and_tables_in_order(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_heading("Handbook", level=1)
    document.add_paragraph("Welcome to the team.")
    document.add_heading("Contacts", level=2)
    table = document.add_table(rows=2, cols=2)
    for row, cells in zip(table.rows, [("Name", "Phone"), ("Ada", "555-0100")], strict=True):
        row.cells[0].text, row.cells[1].text = cells
    document.add_paragraph("Call us any time.")
    path = tmp_path / "handbook.docx"
    document.save(str(path))
    text = only(read_file(path))
    assert text == (
        "# Handbook\n\nWelcome to the team.\n\n## Contacts\n\n"
        "Name | Phone\nAda | 555-0100\n\nCall us any time."
    )


def test_plain_text_renamed_to_docx(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="not a zip package"):
        read_file(write(tmp_path, "notes.docx", "I am plain text"))


def test_zip_without_word_document(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ReaderError, match=r"word/document\.xml"):
        read_file(write(tmp_path, "odd.docx", buffer.getvalue()))


# --- CSV / TSV ------------------------------------------------------------------------------


def test_csv_question_answer_with_importance(tmp_path: Path) -> None:
    rows = (
        "Question,Answer,Importance,Topic\n"
        '"What is the refund window?","30 days,\nfrom delivery.",0.9,billing\n'
        "Who do I call?,,0.5,support\n"
        "\n"
        "Is it free?,Yes.,,pricing\n"
    )
    result = read_file(write(tmp_path, "faq.csv", rows))
    first, second = result.records
    assert first.kind == "qa" and first.line == 2
    assert first.messages == [
        {"role": "user", "content": "What is the refund window?"},
        {"role": "assistant", "content": "30 days,\nfrom delivery."},
    ]
    assert first.meta == {"importance": 0.9, "Topic": "billing"}
    assert first.text == "user: What is the refund window?\nassistant: 30 days,\nfrom delivery."
    # Row numbers are file lines, so the quoted two-line answer shifts the rows after it.
    assert second.line == 6 and second.meta == {"Topic": "pricing"}
    assert result.problems == ["row 4: empty Answer"]


def test_semicolon_csv_with_prompt_response(tmp_path: Path) -> None:
    result = read_file(write(tmp_path, "pr.csv", "prompt;response\nHi, there?;Hello, friend.\n"))
    assert [m["content"] for m in result.records[0].messages or []] == ["Hi, there?", "Hello, friend."]


def test_tsv_instruction_input_output(tmp_path: Path) -> None:
    rows = "instruction\tinput\toutput\nTranslate to French\tcheese\tfromage\nSay hi\t\tHi!\n"
    result = read_file(write(tmp_path, "alpaca.tsv", rows))
    assert [r.messages[0]["content"] for r in result.records if r.messages] == [
        "Translate to French\n\ncheese",
        "Say hi",
    ]
    assert [r.line for r in result.records] == [2, 3]


def test_csv_without_qa_columns_gives_text_rows(tmp_path: Path) -> None:
    result = read_file(write(tmp_path, "people.csv", "name,role\nAda,engineer\nGrace,\n"))
    assert [(r.kind, r.text, r.line) for r in result.records] == [
        ("text", "name: Ada; role: engineer", 2),
        ("text", "name: Grace", 3),
    ]


def test_csv_with_only_bad_rows(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="no usable rows: row 2: empty a"):
        read_file(write(tmp_path, "bad.csv", "q,a\nwhy?,\n"))


# --- JSON / JSONL ---------------------------------------------------------------------------

OPENAI = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
}
SHAREGPT = {"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]}
QA = {"Prompt": "Capital of France?", "Response": "Paris", "importance": 2}


def test_json_openai_drops_trailing_user_turn(tmp_path: Path) -> None:
    record = read_file(write(tmp_path, "chat.json", json.dumps(OPENAI))).records[0]
    assert record.kind == "conversation"
    assert [m["role"] for m in record.messages or []] == ["system", "user", "assistant"]
    assert record.text == "system: Be brief.\nuser: Hi\nassistant: Hello!"


def test_json_sharegpt(tmp_path: Path) -> None:
    record = read_file(write(tmp_path, "sg.json", json.dumps(SHAREGPT))).records[0]
    assert record.messages == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]


@pytest.mark.parametrize(
    "document",
    [[OPENAI, SHAREGPT, QA], {"data": [OPENAI, SHAREGPT, QA]}, {"conversations": [OPENAI, SHAREGPT, QA]}],
    ids=["list", "data-wrapper", "conversations-wrapper"],
)
def test_json_collections(tmp_path: Path, document: object) -> None:
    result = read_file(write(tmp_path, "set.json", json.dumps(document)))
    assert [r.kind for r in result.records] == ["conversation", "conversation", "qa"]
    assert result.records[2].meta == {"importance": 2}
    assert result.problems == []


def test_json_list_reports_bad_items(tmp_path: Path) -> None:
    no_reply = {"messages": [{"role": "user", "content": "Hello?"}, {"role": "assistant", "content": "  "}]}
    result = read_file(write(tmp_path, "mixed.json", json.dumps([no_reply, SHAREGPT, {"foo": "bar"}])))
    assert len(result.records) == 1
    assert result.problems[0].startswith("item 1: conversation has no user message")
    assert result.problems[1].startswith("item 3: not a chat or Q&A example")


def test_arbitrary_json_becomes_text(tmp_path: Path) -> None:
    document = {"title": "Policy", "sections": [{"body": "Be kind."}, {"body": "Ship often.", "n": 3}]}
    result = read_file(write(tmp_path, "policy.json", json.dumps(document)))
    assert [(r.kind, r.text) for r in result.records] == [("text", "Policy\nBe kind.\nShip often.")]


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="invalid JSON at line 3, column 8"):
        read_file(write(tmp_path, "broken.json", '{\n  "a": 1,\n  "b": tru\n}'))


def test_jsonl_keeps_good_lines_and_reports_bad_ones(tmp_path: Path) -> None:
    lines = [json.dumps(SHAREGPT), "{not json", "", json.dumps(QA), json.dumps({"text": "Plain doc."})]
    result = read_file(write(tmp_path, "train.jsonl", "\n".join(lines)))
    assert [(r.kind, r.line) for r in result.records] == [("conversation", 1), ("qa", 4), ("text", 5)]
    assert len(result.problems) == 1 and result.problems[0].startswith("line 2: invalid JSON")


def test_jsonl_with_only_bad_lines(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="no usable lines: line 1: invalid JSON"):
        read_file(write(tmp_path, "bad.jsonl", "{oops\n"))


def test_csv_note_lines_above_the_header_are_skipped(tmp_path: Path) -> None:
    path = write(
        tmp_path, "prices.csv", "# Data source: example.com\n# units: USD\nDate,Price\n2024-01-02,10.5\n"
    )
    (record,) = read_file(path).records
    assert record.text == "Date: 2024-01-02; Price: 10.5" and record.line == 4


@pytest.mark.parametrize("header", ["#,Question,Answer", '"#";Question;Answer', "#\tQuestion\tAnswer"])
def test_csv_whose_first_column_is_named_hash_keeps_its_header(tmp_path: Path, header: str) -> None:
    # an exported table's row-number column: the header was skipped as a note, and the first row
    # named the columns (no Q&A pairs, the first question lost)
    delimiter = header[-7]
    rows = [header, *(delimiter.join([str(n), f"Question {n}?", f"Answer {n}."]) for n in (1, 2))]
    path = write(tmp_path, "numbered.csv", "# exported 2026-12-07, by hand\n" + "\n".join(rows) + "\n")
    records = read_file(path).records
    assert [(r.kind, r.line, r.messages and r.messages[0]["content"]) for r in records] == [
        ("qa", 3, "Question 1?"),
        ("qa", 4, "Question 2?"),
    ]


def test_csv_delimiter_is_sniffed_from_a_bounded_sample_of_whole_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # csv.Sniffer's time is quadratic in its sample on unclosed quotes (9 s for 64K characters of
    # ',"x'): it now sees at most 16K, cut at a line end, and long rows still give their delimiter
    import csv

    samples: list[str] = []
    sniff = csv.Sniffer.sniff
    monkeypatch.setattr(
        csv.Sniffer, "sniff", lambda self, text, *a, **k: samples.append(text) or sniff(self, text, *a, **k)
    )
    rows = ["question;answer"] + [f"Question {n}?;" + "A long answer, with commas. " * 100 for n in range(30)]
    records = read_file(write(tmp_path, "long.csv", "\n".join(rows) + "\n")).records
    assert len(records) == 30 and records[0].messages and records[0].messages[0]["content"] == "Question 0?"
    assert 0 < len(samples[-1]) <= 16384 and samples[-1].endswith("\n")
    hostile = read_file(write(tmp_path, "hostile.csv", "a,b\n" + ',"x' * 30000))
    assert hostile.records and len(samples[-1]) <= 16384


def test_a_number_past_pythons_digit_limit_keeps_its_line(tmp_path: Path) -> None:
    # int() refuses over 4,300 digits (ValueError, not JSONDecodeError): the whole file used to
    # fail as an "internal error"; the number is kept as its text
    big = "9" * 5000
    lines = [json.dumps(QA), '{"id": ' + big + ', "text": "A plain document line."}', json.dumps(QA)]
    result = read_file(write(tmp_path, "train.jsonl", "\n".join(lines)))
    assert [r.line for r in result.records] == [1, 2, 3] and result.problems == []
    whole = read_file(write(tmp_path, "one.json", '{"id": ' + big + ', "text": "A document."}'))
    assert len(whole.records) == 1


def test_a_csv_cell_longer_than_csvs_own_cap_is_read(tmp_path: Path) -> None:
    # csv's default field limit (131,072 characters) used to fail the file as "malformed CSV"
    answer = "The long answer goes on. " * 8000
    result = read_file(write(tmp_path, "faq.csv", f'question,answer\nWhat is it?,"{answer}"\nWho?,Us.\n'))
    assert [len(r.messages[1]["content"]) for r in result.records] == [len(answer.strip()), 3]
