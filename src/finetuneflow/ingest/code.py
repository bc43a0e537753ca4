"""Source code files: the whole file as text, and for Python, documented functions as Q&A pairs.

Every documented module-level function, class and method gives two ``qa`` records:
``doc->code`` (write this signature from its docstring) and ``code->doc`` (explain this code;
the answer is the docstring). Code is kept as written: no Unicode normalisation, which could
change string literals.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator

from finetuneflow.errors import ReaderError
from finetuneflow.ingest.json_shapes import render
from finetuneflow.records import Message, SourceRecord
from finetuneflow.text.clean import clean_message

LANGUAGES: dict[str, str] = {
    ".py": "python",
    ".js": "javascript",
    ".ts": "typescript",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".c": "c",
    ".cpp": "cpp",
    ".h": "c",
    ".rb": "ruby",
    ".sh": "shell",
    ".sql": "sql",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".toml": "toml",
    ".ini": "ini",
    ".mk": "make",  # also a Makefile (ingest/sniff.extensionless)
    ".dockerfile": "dockerfile",  # also a Dockerfile
}
"""Language name (``meta["language"]``) per lower-case source file extension."""

_Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def code_records(source: str, suffix: str) -> list[SourceRecord]:
    """A ``text`` record of the whole file, then (Python only) the documented units' ``qa`` records.

    Raises:
        ReaderError: the file is blank, or Python source does not parse (the message names the line).
    """
    language = LANGUAGES[suffix]
    source = _tidy(source)
    if not source.strip():
        raise ReaderError("the file contains only whitespace; nothing to learn from")
    whole = SourceRecord("text", source.lstrip("\n"), meta={"language": language})
    return [whole, *python_units(source)] if language == "python" else [whole]


def python_units(source: str) -> list[SourceRecord]:
    """The ``doc->code`` and ``code->doc`` records of every documented function, class and method.

    Raises:
        ReaderError: the source has a syntax error; the message gives its line number.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ReaderError(
            f"Python syntax error at line {exc.lineno}: {exc.msg}; fix the file or remove it from the sources"
        ) from exc
    lines = source.split("\n")
    records: list[SourceRecord] = []
    for node, owner in _documented(tree):
        records.extend(_unit_records(node, owner, lines))
    return records


def _documented(tree: ast.Module) -> Iterator[tuple[_Definition, str | None]]:
    """(definition, owning class name or None) for module-level defs and methods with a docstring."""
    for node in tree.body:
        if not isinstance(node, _Definition):
            continue
        if ast.get_docstring(node):
            yield node, None
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and ast.get_docstring(item):
                    yield item, node.name


def _unit_records(node: _Definition, owner: str | None, lines: list[str]) -> list[SourceRecord]:
    """The two records for one documented definition (one if its docstring shares the def line)."""
    docstring = clean_message(ast.get_docstring(node) or "")
    symbol = f"{owner}.{node.name}" if owner else node.name
    code = _segment(lines, _first_line(node), node.end_lineno or node.lineno)
    what = "class" if isinstance(node, ast.ClassDef) else "method" if owner else "function"
    suffix = f" of class `{owner}`" if owner else ""
    records = [
        _qa(f"Write the {what} `{_signature(node)}`{suffix}: {docstring}", code, node, symbol, "doc->code")
    ]
    body = _without_docstring(node, lines)
    if body is not None:
        prompt = f"Explain what this code does:\n```python\n{body}\n```"
        records.append(_qa(prompt, docstring, node, symbol, "code->doc"))
    return records


def _qa(question: str, answer: str, node: _Definition, symbol: str, unit: str) -> SourceRecord:
    messages: list[Message] = [
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]
    meta = {"symbol": symbol, "lineno": node.lineno, "unit": unit}
    return SourceRecord("qa", render(messages), line=node.lineno, messages=messages, meta=meta)


def _signature(node: _Definition) -> str:
    """``def name(args) -> returns`` / ``class Name(bases)`` as written (via ``ast.unparse``)."""
    if isinstance(node, ast.ClassDef):
        bases = [ast.unparse(base) for base in node.bases] + [ast.unparse(kw) for kw in node.keywords]
        return f"class {node.name}({', '.join(bases)})" if bases else f"class {node.name}"
    prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
    return f"{prefix} {node.name}({ast.unparse(node.args)}){returns}"


def _first_line(node: _Definition) -> int:
    """1-based first line of the definition, decorators included."""
    return min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])


def _without_docstring(node: _Definition, lines: list[str]) -> str | None:
    """The definition's source minus its docstring; None when the docstring is on the def line."""
    doc = node.body[0]
    start, end = _first_line(node), node.end_lineno or node.lineno
    if doc.lineno <= node.lineno:
        return None
    kept = lines[start - 1 : doc.lineno - 1] + lines[(doc.end_lineno or doc.lineno) : end]
    if len(node.body) == 1:  # only a docstring: keep the body valid Python
        kept.append(" " * doc.col_offset + "...")
    return textwrap.dedent("\n".join(kept)).strip("\n")


def _segment(lines: list[str], start: int, end: int) -> str:
    """Lines ``start``..``end`` (1-based, inclusive), dedented so methods start at column 0."""
    return textwrap.dedent("\n".join(lines[start - 1 : end])).strip("\n")


def _tidy(source: str) -> str:
    """One line-ending style, no trailing spaces or blank lines; leading lines kept for line numbers."""
    lines = source.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).rstrip("\n")
