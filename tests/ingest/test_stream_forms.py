"""CSV / TSV and JSON objects stream: the same records and chunks as reading them whole, limits
named (``ingest/delimited.py``, ``ingest/json_object.py``, ``ingest/stream.py``)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from finetuneflow import api
from finetuneflow.errors import ReaderError
from finetuneflow.ingest import json_object
from finetuneflow.ingest.config import IngestConfig
from finetuneflow.ingest.limits import Limits, applied
from finetuneflow.ingest.readers import read_file

from .old_delimited import read_delimited
from .test_streaming import _chunks, _prose


def _cell(rng: random.Random, words: int) -> str:
    text = _prose(rng, words)
    return text.replace("\r", "") if rng.random() < 0.5 else text


def _csv_files(folder: Path) -> list[Path]:
    """CSV / TSV of every shape the reader knows, each over 10 KB."""
    rng = random.Random(11)
    folder.mkdir()
    qa = [
        "# exported from the help desk\r\n",
        "# second note\rstill the note\n",
        "Question,Answer,importance\r\n",
    ]
    for n in range(120):
        answer = "" if n % 17 == 0 else _cell(rng, 15)
        extra = ',"x"' if n % 23 == 0 else ""
        qa.append(f'"Q{n} {_cell(rng, 5)}","{answer.replace(chr(34), chr(34) * 2)}",{n % 3}{extra}\r\n')
        if n % 31 == 0:
            qa.append("\r\n,,\r\n")
    (folder / "qa.csv").write_text("".join(qa), encoding="utf-8", newline="")
    table = ["name;city;note\n"] + [
        f"n{n};{rng.choice(['Köln', 'Zürich'])};{_cell(rng, 12)!r}\n" for n in range(200)
    ]
    (folder / "semicolons.csv").write_bytes(("".join(table)).encode("cp1252", "replace"))
    tsv = ["instruction\tinput\toutput\n"] + [f"do {n}\t{n}\t{_cell(rng, 10)}\n" for n in range(150)]
    (folder / "alpaca.tsv").write_bytes(b"\xef\xbb\xbf" + "".join(tsv).encode())
    mac = ["prompt,response\r"] + [f"p{n},{_cell(rng, 8).replace(',', ' ')}\r" for n in range(150)]
    (folder / "old-mac.csv").write_text("".join(mac).replace("\n", " "), encoding="utf-8", newline="")
    (folder / "utf16.csv").write_text(
        "q,a\n" + "".join(f"q{n},a{n} café\n" for n in range(900)), encoding="utf-16"
    )
    return sorted(folder.iterdir())


def test_csv_records_equal_the_whole_text_reader(tmp_path: Path) -> None:
    for path in _csv_files(tmp_path / "in"):
        records, problems = read_delimited(path)
        result = read_file(path)
        assert result.problems == problems, path.name
        assert [(r.kind, r.text, r.line, r.messages, r.meta) for r in result.records] == [
            (r.kind, r.text, r.line, r.messages, r.meta) for r in records
        ], path.name
        assert len(records) > 50


def _objects(folder: Path) -> None:
    """JSON objects of every shape the whole-document reader tells apart."""
    rng = random.Random(13)
    folder.mkdir()
    qa = [{"question": f"Q{n}", "answer": _prose(rng, 20)} for n in range(200)]
    write = lambda name, value: (folder / name).write_text(json.dumps(value), encoding="utf-8")  # noqa: E731
    write("wrapper.json", {"title": "help desk", "data": [{"note": "not one"}, *qa, {"question": "Q"}]})
    write(
        "two-wrappers.json",
        {
            "items": qa[:100],
            "conversations": [
                {
                    "messages": [
                        {"role": "user", "content": f"hi {n}"},
                        {"role": "assistant", "content": _prose(rng, 30)},
                    ]
                }
                for n in range(90)
            ],
        },
    )
    write(
        "wrapper-no-examples.json",
        {"meta": {"by": "me"}, "items": [{"body": _prose(rng, 40)} for _ in range(60)]},
    )
    write("string.json", {"title": "  ", "text": "\n  " + _prose(rng, 6000) + "  \n", "n": 3})
    write(
        "nested.json", {"a": {"b": [_prose(rng, 30), {"c": _prose(rng, 30)}] * 40}, "d": [1, 2.5, None, True]}
    )
    write("facts.json", {"data": qa[:50], "facts": [_prose(rng, 20) for _ in range(80)]})
    write(
        "one-conversation.json",
        {
            "conversations": [
                {"from": "human", "value": _prose(rng, 900)},
                {"from": "gpt", "value": _prose(rng, 900)},
            ]
        },
    )
    write("one-qa.json", {"Prompt": _prose(rng, 900), "Response": _prose(rng, 900), "data": qa})
    (folder / "repeated.json").write_text('{"data": [1], "data": ' + json.dumps(qa) + "}", encoding="utf-8")
    write("empty-list.json", {"examples": [], "body": _prose(rng, 3000)})
    lines = "\n".join(json.dumps({"question": f"L{n}", "answer": _prose(rng, 20)}) for n in range(150))
    (folder / "lines-named.json").write_text(lines, encoding="utf-8")  # JSON lines: read whole


@pytest.mark.parametrize("maker", [_csv_files, _objects])
def test_streamed_chunks_equal_the_whole_ones(maker: Any, tiny_model: Path, tmp_path: Path) -> None:
    maker(tmp_path / "docs")
    base = dict(tokenizer=str(tiny_model), max_tokens=64, overlap=8, workers=1)
    whole = api.ingest([tmp_path / "docs"], "whole", IngestConfig(**base, segment_mb=100.0))
    streamed = api.ingest([tmp_path / "docs"], "streamed", IngestConfig(**base, segment_mb=0.01))
    assert [(f.path, f.status, f.chunks, f.problems) for f in streamed.files] == [
        (f.path, f.status, f.chunks, f.problems) for f in whole.files
    ]
    assert all(f.status != "failed" for f in whole.files), whole.files
    a, b = _chunks("whole"), _chunks("streamed")
    assert set(a) == set(b) and len(a) == len(whole.files)
    for path in a:
        assert b[path] == a[path], path


def test_object_plans(tmp_path: Path) -> None:
    _objects(tmp_path / "docs")
    plans = {}
    for path in sorted((tmp_path / "docs").iterdir()):
        with path.open("rb") as handle:
            if path.name == "lines-named.json":
                with pytest.raises(ReaderError, match="invalid JSON"):
                    json_object.survey(handle)
                continue
            plans[path.name] = json_object.plan(json_object.survey(handle))
    assert plans == {
        "wrapper.json": ("items", "data"),
        "two-wrappers.json": ("items", "conversations"),
        "wrapper-no-examples.json": ("items", "items"),
        "string.json": ("text", ""),
        "nested.json": ("text", ""),
        "facts.json": ("whole", ""),
        "one-conversation.json": ("whole", ""),
        "one-qa.json": ("whole", ""),
        "repeated.json": ("whole", ""),
        "empty-list.json": ("items", "examples"),
    }


def test_check_strings_finds_the_longest_string_across_blocks(tmp_path: Path) -> None:
    rng = random.Random(17)
    for trial in range(40):
        strings = ["".join(rng.choice('ab\\"\n é') for _ in range(rng.randint(0, 60))) for _ in range(8)]
        text = json.dumps({"k": strings, "x": {"y": rng.choice(strings)}}, ensure_ascii=trial % 2 == 0)
        path = tmp_path / "s.json"
        path.write_text(text, encoding="utf-8")
        raw = path.read_bytes()
        longest = max(len(m.group(1)) for m in re.finditer(rb'"((?:[^"\\]|\\.)*)"', raw))
        for segment in (1, 2, 3, 7, 64):
            with applied(Limits(segment=segment)), path.open("rb") as handle:
                json_object.check_strings(handle, longest)  # at the limit: accepted
                handle.seek(0)
                with pytest.raises(ReaderError, match="a JSON string of .* max_record_mb"):
                    json_object.check_strings(handle, longest - 1)


def test_long_json_string_and_csv_line_are_refused_by_name(tiny_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "string.json").write_text(json.dumps({"title": "t", "text": "word " * 8000}))
    (folder / "fits.json").write_text(
        json.dumps({"text": [_prose(random.Random(n), 1000) for n in range(4)]})
    )
    (folder / "line.csv").write_text("a,b\n" + "x," + "y" * 30000 + "\n")
    (folder / "list.json").write_text(json.dumps(["short", "z" * 30000]))  # a list's item: built whole
    # an item of many short strings (each under the limit), past the parser's 64 KiB reads
    many = {"question": "q", "answer": "a", "tags": ["w"] * 30_000}
    (folder / "item.json").write_text(json.dumps([{"question": "q", "answer": "a"}, many]))
    (folder / "wrapped-item.json").write_text(json.dumps({"data": [{"question": "q", "answer": "a"}, many]}))
    # the same strings before the wrapper's list are not its first item's
    before = {"notes": many["tags"], "data": [{"question": f"q{n}", "answer": "a"} for n in range(3)]}
    (folder / "notes-first.json").write_text(json.dumps(before))
    after = {"data": before["data"], "notes": many["tags"]}  # nor those after it its last item's
    (folder / "notes-after.json").write_text(json.dumps(after))
    one = {"question": "q", "answer": "a", "data": [{"question": f"q{n}", "answer": "a"} for n in range(900)]}
    (folder / "one-example.json").write_text(json.dumps(one))
    cfg = IngestConfig(tokenizer=str(tiny_model), workers=1, segment_mb=0.001, max_record_mb=0.01)
    files = {Path(f.path).name: f for f in api.ingest([folder], "p", cfg).files}
    for name in (
        "string.json",
        "line.csv",
        "one-example.json",
        "list.json",
        "item.json",
        "wrapped-item.json",
    ):
        assert files[name].status == "failed", files[name]
        assert (
            "max_record_mb=0.01" in files[name].problems[0] and "--max-record-mb" in files[name].problems[0]
        )
        assert files[name].problems[0].startswith(f"{name}: ")
    assert "read whole (one example" in files["one-example.json"].problems[0]
    assert "a JSON list item of" in files["item.json"].problems[0]
    assert "a JSON list item of" in files["wrapped-item.json"].problems[0]
    assert files["fits.json"].status == "ingested" and files["fits.json"].chunks > 1, files["fits.json"]
    assert files["notes-first.json"].status == "ingested", files["notes-first.json"]
    assert files["notes-after.json"].status == "ingested", files["notes-after.json"]


def test_csv_progress_moves_inside_the_file(tiny_model: Path, tmp_path: Path) -> None:
    from finetuneflow.events import Event

    path = tmp_path / "rows.csv"
    path.write_text("id,text\n" + "".join(f"{n},{_prose(random.Random(n), 20)!r}\n" for n in range(3000)))
    events: list[Event] = []
    cfg = IngestConfig(tokenizer=str(tiny_model), workers=1, segment_mb=0.01)
    report = api.ingest([path], "p", cfg, on_event=events.append)
    assert report.files[0].status == "ingested" and report.files[0].chunks > 2000
    inside = [
        e.done
        for e in events
        if e.stage == "bytes" and e.message == "rows.csv" and e.done < path.stat().st_size
    ]
    assert len(inside) >= 5 and inside == sorted(inside)


def test_streamed_json_with_a_bom_or_in_utf16_reads_as_its_utf8_copy(
    tiny_model: Path, tmp_path: Path
) -> None:
    """Windows PowerShell 5 writes ``ConvertTo-Json > file`` in UTF-16 with a byte-order mark, and
    some editors save UTF-8 with one: the streaming parser takes UTF-8 only, so large files failed."""
    _objects(tmp_path / "utf8")
    qa = [{"question": f"Q{n}", "answer": _prose(random.Random(n), 20)} for n in range(150)]
    (tmp_path / "utf8" / "list.json").write_text(json.dumps(qa), encoding="utf-8")
    for encoding in ("utf-8-sig", "utf-16"):
        (tmp_path / encoding).mkdir()
        for path in (tmp_path / "utf8").iterdir():
            (tmp_path / encoding / path.name).write_text(path.read_text(encoding="utf-8"), encoding=encoding)
    base = dict(tokenizer=str(tiny_model), max_tokens=64, overlap=8, workers=1, segment_mb=0.01)
    seen = {}
    for encoding in ("utf8", "utf-8-sig", "utf-16"):
        report = api.ingest([tmp_path / encoding], encoding, IngestConfig(**base))
        files = {Path(f.path).name: (f.status, f.chunks, f.problems) for f in report.files}
        seen[encoding] = files, {Path(p).name: rows for p, rows in _chunks(encoding).items()}
    files, chunks = seen["utf8"]
    assert len(files) == 12 and files["list.json"][:2] == ("ingested", 149)  # one near-duplicate
    for encoding in ("utf-8-sig", "utf-16"):
        assert seen[encoding] == (files, chunks), encoding


def test_invalid_streamed_json_is_named_without_quoting_the_file(tiny_model: Path, tmp_path: Path) -> None:
    """The parser's own message quotes the text around the error: a report must not show a key."""
    secret = "sk-live-4f9a8b7c6d5e"
    rows = [{"question": f"Q{n}", "answer": _prose(random.Random(n), 20)} for n in range(100)]
    body = json.dumps(rows)[:-1] + f', {{"question": "token", "answer": "{secret}" oops}}]'
    (tmp_path / "broken.json").write_text(body, encoding="utf-8")
    (tmp_path / "latin1.json").write_bytes(json.dumps(rows).replace("Q7", "Q7 café").encode("cp1252"))
    cfg = IngestConfig(tokenizer=str(tiny_model), workers=1, segment_mb=0.001)
    files = {Path(f.path).name: f for f in api.ingest([tmp_path], "p", cfg).files}
    broken, latin1 = files["broken.json"], files["latin1.json"]
    assert (
        broken.status == "failed"
        and "invalid JSON (lexical error: invalid char in json text)" in broken.problems[0]
    )
    assert not any(secret in p or "oops" in p for f in files.values() for p in f.problems)
    from finetuneflow import paths
    from finetuneflow.ingest.report import REPORT_FILE

    assert secret not in (paths.project_dir("p") / REPORT_FILE).read_text(encoding="utf-8")
    assert latin1.status == "failed" and "save it again as UTF-8" in latin1.problems[0], latin1.problems
    assert "café" not in latin1.problems[0]
