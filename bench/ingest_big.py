"""Big single files through the whole ingest, ours against the code before streaming (``--big`` of
``bench/ingest.py``).

Generates in /tmp (never in the repository): a Markdown file of paragraphs and headings, a one-line
Markdown file, a JSON document holding one long string, a JSON list nested 100,000 deep, and a
large Markdown file for ours alone. Each file is ingested alone, in a fresh process, with
``workers=1``, once by this tree's ``src`` and once by the peer: the ``src`` of the commit this
branch started from (``git merge-base HEAD main``, extracted with ``git archive`` into /tmp, so the
old path never lives in the package). Files over ``--peer-max-mb`` are not given to the peer: it
needed 6.3 GB for 50 MB of JSON.

Per run: status, chunks, CPU seconds (user + system of the process: read, clean, chunk by
tokens, sign, store), MB per CPU-second, the idle RSS (after imports, the database and the
tokenizer are loaded by a warm-up ingest) and the peak RSS during the ingest (VmHWM, reset after
the warm-up), and a digest of the chunks (path, index, text, tokens, offsets) so that identical
output shows as equal digests. Then MB per CPU-second of both over the files both ran, and the
ratio. Target (printed, never asserted): >= 2 MB per CPU-second on text and Markdown, peak RSS over
idle < 1 GB for any file.

    python bench/ingest.py --big [--prose-mb 8] [--oneline-mb 20] [--string-mb 50] [--huge-mb 200]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import subprocess
import sys
import sysconfig
import tarfile
import time
from collections import Counter
from io import BytesIO
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = Path("/tmp/ftf-bench-big")
MODEL_CACHE = Path.home() / ".cache" / "ftf-bench"
TARGET_MB_PER_CPU_S = 2.0


def _vocab() -> tuple[np.ndarray, np.ndarray]:
    """English words and their frequencies, counted in the documentation files installed beside
    the packages (made-up words tokenize into ~2x as many tokens per character as prose)."""
    counts: Counter[str] = Counter()
    docs = Path(sysconfig.get_paths()["purelib"])
    for path in sorted(docs.rglob("*")):
        if path.suffix in (".md", ".rst", ".txt") and path.is_file():
            counts.update(re.findall(r"[A-Za-z]{2,}", path.read_text(errors="replace")))
    if len(counts) < 1000:  # nothing installed to learn from: lower-case made-up words
        rng = np.random.default_rng(1)
        made = ["".join(rng.choice(list("etaoinshrdlu"), rng.integers(2, 9))) for _ in range(5000)]
        counts = Counter({w: 5000 // (k + 1) + 1 for k, w in enumerate(made)})
    words, freq = zip(*counts.most_common(30000), strict=True)
    weights = np.array(freq, dtype=float)
    return np.array(words), weights / weights.sum()


VOCAB: tuple[np.ndarray, np.ndarray] | None = None


def _words(rng: np.random.Generator, n: int) -> list[str]:
    global VOCAB
    VOCAB = VOCAB or _vocab()
    words, p = VOCAB
    return list(words[rng.choice(len(words), n, p=p)])


def _prose(rng: np.random.Generator, megabytes: float, one_line: bool) -> str:
    """About ``megabytes`` of words; sentences of 8-20 words, paragraphs of 3-8 sentences,
    a heading every 10 paragraphs (all on one line when ``one_line``)."""
    out: list[str] = []
    size, paragraph = 0, 0
    while size < megabytes * 1e6:
        words = _words(rng, 20000)
        at = 0
        while at < len(words):
            sentences = []
            for _ in range(int(rng.integers(3, 9))):
                take = int(rng.integers(8, 21))
                sentences.append(" ".join(words[at : at + take]).capitalize() + ".")
                at += take
            paragraph += 1
            text = " ".join(sentences)
            if paragraph % 10 == 0:
                text = f"## Part {paragraph // 10}\n\n{text}"
            out.append(text)
            size += len(text) + 2
    joined = " ".join(out) if one_line else "\n\n".join(out)
    return joined.replace("\n", " ") if one_line else joined


def make_files(args: argparse.Namespace) -> list[tuple[Path, bool]]:
    """(file, the peer runs it too), generated once and kept in /tmp between runs."""
    WORK.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    plan = [
        (f"prose-{args.prose_mb:g}mb.md", lambda: _prose(rng, args.prose_mb, False)),
        (f"oneline-{args.oneline_mb:g}mb.md", lambda: _prose(rng, args.oneline_mb, True)),
        (
            f"string-{args.string_mb:g}mb.json",
            lambda: json.dumps({"text": _prose(rng, args.string_mb, False)}),
        ),
        ("deep-100k.json", lambda: "[" * 100_000 + "]" * 100_000),
        (f"prose-{args.huge_mb:g}mb.md", lambda: _prose(rng, args.huge_mb, False)),
    ]
    files = []
    for name, make in plan:
        path = WORK / name
        if not path.exists():
            path.write_text(make(), encoding="utf-8")
        small = path.stat().st_size <= args.peer_max_mb * 1e6
        peer = small and not name.startswith(f"prose-{args.huge_mb:g}")
        files.append((path, peer))
    return files


def peer_src() -> Path:
    """The ``src`` of the commit this branch started from, extracted under /tmp."""
    base = subprocess.run(
        ["git", "merge-base", "HEAD", "main"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    target = WORK / f"peer-{base[:10]}"
    if not (target / "src").is_dir():
        archive_cmd = ["git", "archive", base, "src"]
        tar = subprocess.run(archive_cmd, cwd=ROOT, capture_output=True, check=True).stdout
        with tarfile.open(fileobj=BytesIO(tar)) as archive:
            archive.extractall(target, filter="data")
    return target / "src"


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(src: str, file: str, home: str) -> None:
    """One measured ingest, in this (fresh) process; prints a JSON line."""
    sys.path.insert(0, src)
    os.environ["FTF_HOME"] = home
    from sqlalchemy import select

    from finetuneflow import api
    from finetuneflow.ingest.config import IngestConfig
    from finetuneflow.state import Chunk, File, Project, session_scope

    cfg = IngestConfig(workers=1)
    warm = Path(home) / "warm.md"
    warm.write_text("# Warm-up\n\nLoads the database, the tokenizer and every module before the clock.\n")
    api.ingest([warm], "warm", cfg)
    idle_kb = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (the peak) to the current RSS
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    report = api.ingest([Path(file)], "big", cfg)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak_kb = _status_kb("VmHWM")  # before the digest below, which loads every chunk's text
    digest = hashlib.sha256()
    with session_scope() as s:
        rows = s.execute(
            select(File.path, Chunk.idx, Chunk.text, Chunk.n_tokens, Chunk.char_start, Chunk.char_end)
            .join(File, File.id == Chunk.file_id)
            .join(Project, Project.id == File.project_id)
            .where(Project.name == "big")
            .order_by(Chunk.idx)
        )
        for row in rows:
            digest.update(repr(tuple(row)).encode())
    f = report.files[0]
    print(json.dumps({
        "status": f.status, "chunks": f.chunks, "problems": f.problems[:1], "cpu": cpu, "wall": wall,
        "idle_mb": idle_kb / 1024, "peak_mb": peak_kb / 1024, "digest": digest.hexdigest()[:12],
    }))  # fmt: skip


def run(side: str, src: Path, file: Path) -> dict[str, object]:
    home = WORK / f"home-{side}-{file.stem}"
    subprocess.run(["rm", "-rf", str(home)], check=True)
    home.mkdir(parents=True)
    (home / "models").symlink_to(MODEL_CACHE / "models", target_is_directory=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(src), str(file), str(home)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    subprocess.run(["rm", "-rf", str(home)], check=True)
    if done.returncode:
        return {"status": f"crashed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}"}
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def prepare_model() -> None:
    """Convert the default model once into the persistent cache (not timed)."""
    MODEL_CACHE.joinpath("models").mkdir(parents=True, exist_ok=True)
    home = WORK / "home-prepare"
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "models").exists():
        (home / "models").symlink_to(MODEL_CACHE / "models", target_is_directory=True)
    os.environ["FTF_HOME"] = str(home)
    sys.path.insert(0, str(ROOT / "src"))
    from finetuneflow.models.resolve import resolve_model

    resolve_model("smollm2-135m-instruct")


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        child(*argv[1:4])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prose-mb", type=float, default=8)
    parser.add_argument("--oneline-mb", type=float, default=20)
    parser.add_argument("--string-mb", type=float, default=50)
    parser.add_argument("--huge-mb", type=float, default=200, help="ours only")
    parser.add_argument("--peer-max-mb", type=float, default=25, help="larger files: ours only")
    args = parser.parse_args(argv)
    prepare_model()
    files = make_files(args)
    sides = {"ours": ROOT / "src", "peer": peer_src()}
    print(f"files in {WORK}; peer = {sides['peer'].parent.name}; workers=1; the machine may be loaded")
    print(f"{'file':<22}{'MB':>7} {'side':<5} {'status':<9}{'chunks':>8}{'CPU s':>8}{'MB/CPU-s':>10}"
          f"{'idle MB':>9}{'peak MB':>9}{'over idle':>10}  digest")  # fmt: skip
    totals = {side: [0.0, 0.0] for side in sides}
    for file, peer in files:
        mb = file.stat().st_size / 1e6
        results = {side: run(side, src, file) for side, src in sides.items() if side == "ours" or peer}
        for side, r in results.items():
            if "cpu" not in r:
                print(f"{file.name:<22}{mb:7.1f} {side:<5} {r['status']}")
                continue
            cpu, idle, peak = float(r["cpu"]), float(r["idle_mb"]), float(r["peak_mb"])  # type: ignore[arg-type]
            print(f"{file.name:<22}{mb:7.1f} {side:<5} {r['status']!s:<9}{r['chunks']!s:>8}{cpu:8.1f}"
                  f"{mb / cpu:10.2f}{idle:9.0f}{peak:9.0f}{peak - idle:10.0f}  {r['digest']} "
                  f"{r['problems']}")  # fmt: skip
            if len(results) == 2 and all("cpu" in x for x in results.values()) and file.suffix == ".md":
                totals[side][0] += mb
                totals[side][1] += cpu
    ours, peer = (totals[s][0] / totals[s][1] if totals[s][1] else 0.0 for s in ("ours", "peer"))
    print(f"Markdown both ran: ours {ours:.2f} MB per CPU-second, peer {peer:.2f}; "
          f"ratio {ours / peer if peer else float('nan'):.2f}x; target >= {TARGET_MB_PER_CPU_S} MB/CPU-s: "
          + ("met" if ours >= TARGET_MB_PER_CPU_S else "NOT met"))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
