"""Big single files through the real CLI, ``ftf ingest`` under ``/usr/bin/time -v``, one at a time.

Generates each file in /tmp (never in the repository), written piece by piece so the generator
stays small, runs ``nice -n 5 /usr/bin/time -v ftf ingest FILE -p big`` in a fresh ``FTF_HOME``
(whose ``models/`` links to the bench's model cache, see ``bench/ingest_big.py``), then deletes the
file and the state. Per file: size, wall, CPU seconds (user + system), MB per CPU-second, peak RSS
(``Maximum resident set size``: the largest process of the tree), the same over the idle process
(the peak of ingesting a one-line file: imports, database, tokenizer), exit code, and the CLI's
summary line. Prints a Markdown table. Target (printed, never asserted): peak over idle < 1 GB.

    python bench/ingest_cli.py [--only md-1000,jsonl-500,md-200,string-50,deep-100k,csv-300]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ingest_big  # noqa: E402  (the vocabulary, prose and model cache of the --big bench)

ROOT = Path(__file__).resolve().parents[1]
WORK = Path("/tmp/ftf-bench-cli")
PIECE_MB = 4.0


def _sentences(rng: np.random.Generator, n: int) -> list[str]:
    words = ingest_big._words(rng, n * 14)
    out, at = [], 0
    for _ in range(n):
        take = int(rng.integers(6, 22))
        out.append(" ".join(words[at : at + take]).capitalize() + ".")
        at += take
    return out


def _markdown(rng: np.random.Generator) -> Iterator[str]:
    while True:
        yield ingest_big._prose(rng, PIECE_MB, False) + "\n\n"


def _markdown_bank(rng: np.random.Generator) -> Iterator[str]:
    """Markdown of paragraphs (3-8 sentences, a heading every 10) drawn from a bank of 400k generated
    sentences: as varied for the chunker, tokenizer and dedup (no two chunks alike), but ~10x faster
    to write than fresh prose, which on a loaded box takes longer to generate than to ingest."""
    bank = _sentences(rng, 400_000)
    paragraph = 0
    while True:
        out, size = [], 0
        while size < PIECE_MB * 1e6:
            picks = rng.integers(0, len(bank), int(rng.integers(3, 9)))
            text = " ".join(bank[k] for k in picks.tolist())
            paragraph += 1
            if paragraph % 10 == 0:
                text = f"## Part {paragraph // 10}\n\n{text}"
            out.append(text)
            size += len(text) + 2
        yield "\n\n".join(out) + "\n\n"


def _jsonl(rng: np.random.Generator) -> Iterator[str]:
    n = 0
    while True:
        lines = []
        for sentence in _sentences(rng, 20000):
            n += 1
            if n % 3 == 0:
                messages = [{"role": "user", "content": f"{sentence} ({n})"},
                            {"role": "assistant", "content": " ".join(_sentences(rng, 4))}]  # fmt: skip
                lines.append(json.dumps({"messages": messages}))
            elif n % 3 == 1:
                lines.append(
                    json.dumps({"question": f"{sentence} ({n})", "answer": " ".join(_sentences(rng, 3))})
                )
            else:
                lines.append(json.dumps({"text": " ".join(_sentences(rng, 12))}))
        yield "\n".join(lines) + "\n"


class _Rows:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> None:
        self.parts.append(text)


def _csv(rng: np.random.Generator) -> Iterator[str]:
    yield "question,answer,source\n"
    n = 0
    while True:
        out = _Rows()
        writer = csv.writer(out, lineterminator="\n")
        for sentence in _sentences(rng, 20000):
            n += 1
            writer.writerow([f"{sentence} ({n})", " ".join(_sentences(rng, 3)), f"sheet {n % 7}"])
        yield "".join(out.parts)


def _string_json(megabytes: float) -> Callable[[np.random.Generator], Iterator[str]]:
    def make(rng: np.random.Generator) -> Iterator[str]:
        yield json.dumps({"text": ingest_big._prose(rng, megabytes, False)})

    return make


def _deep(rng: np.random.Generator) -> Iterator[str]:
    yield "[" * 100_000 + "]" * 100_000


PLAN: dict[str, tuple[str, float, Callable[[np.random.Generator], Iterator[str]]]] = {
    "deep-100k": ("deep-100k.json", 0, _deep),
    "string-50": ("string-50mb.json", 0, _string_json(50)),
    "md-200": ("prose-200mb.md", 200, _markdown),
    "csv-300": ("rows-300mb.csv", 300, _csv),
    "jsonl-500": ("lines-500mb.jsonl", 500, _jsonl),
    "md-1000": ("prose-1000mb.md", 1000, _markdown_bank),
}
"""Name -> (file, megabytes to write (0: what the generator gives), generator of pieces)."""


def generate(name: str, scale: float) -> Path:
    file, megabytes, make = PLAN[name]
    megabytes *= scale
    path = WORK / file
    rng = np.random.default_rng(0)
    written = 0
    with path.open("w", encoding="utf-8") as out:
        for piece in make(rng):
            data = piece.encode()
            if megabytes and written + len(data) > megabytes * 1e6:
                data = data[: int(megabytes * 1e6) - written]
                cut = max(data.rfind(b"\n"), 0)  # whole lines / rows only
                out.write(data[:cut].decode() + "\n")
                break
            out.write(piece)
            written += len(data)
            if not megabytes:
                break
    return path


def measure(path: Path, home: Path) -> dict[str, object]:
    """One ``ftf ingest`` of ``path`` under ``/usr/bin/time -v`` in a fresh ``home``."""
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    (home / "models").symlink_to(ingest_big.MODEL_CACHE / "models", target_is_directory=True)
    env = dict(os.environ, FTF_HOME=str(home), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT / "src"))
    ftf = Path(sys.executable).with_name("ftf")
    cmd = ["nice", "-n", "5", "/usr/bin/time", "-v", str(ftf), "ingest", str(path), "-p", "big"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    shutil.rmtree(home, ignore_errors=True)
    stats = dict(re.findall(r"^\s*([^:\n]+):\s*(.+)$", done.stderr, re.M))
    summary = [line for line in done.stdout.splitlines() if line.strip()]
    return {
        "wall": wall,
        "cpu": float(stats.get("User time (seconds)", 0)) + float(stats.get("System time (seconds)", 0)),
        "peak_mb": int(stats.get("Maximum resident set size (kbytes)", 0)) / 1024,
        "rc": int(stats.get("Exit status", done.returncode)),
        "lines": summary[-3:],
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(PLAN), help="comma-separated names of PLAN")
    parser.add_argument("--scale", type=float, default=1.0, help="sizes times this (a quick try)")
    args = parser.parse_args(argv)
    ingest_big.prepare_model()
    WORK.mkdir(parents=True, exist_ok=True)
    tiny = WORK / "idle.md"
    tiny.write_text("# Idle\n\nOne short paragraph, to measure the process without a big file.\n")
    idle = measure(tiny, WORK / "home")
    print(f"idle (one-line file): peak {idle['peak_mb']:.0f} MB, wall {idle['wall']:.1f} s; {idle['lines']}")
    print("| input | size MB | wall s | CPU s | MB per CPU-s | peak RSS MB | over idle MB | exit | summary |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.only.split(","):
        path = generate(name, args.scale)
        mb = path.stat().st_size / 1e6
        r = measure(path, WORK / "home")
        path.unlink()
        cpu, peak = float(r["cpu"]), float(r["peak_mb"])  # type: ignore[arg-type]
        said = " / ".join(str(line).strip() for line in r["lines"])  # type: ignore[attr-defined]
        print(f"| {path.name} | {mb:.1f} | {r['wall']:.0f} | {cpu:.0f} | {mb / cpu:.2f} | {peak:.0f} | "
              f"{peak - float(idle['peak_mb']):.0f} | {r['rc']} | {said} |", flush=True)  # type: ignore[arg-type]  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
