"""The README's openai-client snippet, run as printed against a live server (only the URL changed)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from serve.conftest import RUN, Live
from serve.test_chat import reference

README = Path(__file__).resolve().parents[2] / "README.md"


def snippet() -> str:
    section = README.read_text().split("### Serve your models")[1].split("\n### ")[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    return str(blocks[0])


def test_the_readme_snippet_runs_against_a_live_server(live: Live) -> None:
    code = snippet()
    assert 'base_url="http://127.0.0.1:8765/v1"' in code  # the default port, which the ftf preset uses
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.replace("http://127.0.0.1:8765/v1", live.url), "README.md", "exec"), {})
    expected = reference(live, RUN, [{"role": "user", "content": "What does error E21 mean?"}], 32)
    assert out.getvalue().startswith(expected + "\n")
