"""Does training put facts in? Base vs tuned (style goal) vs tuned (knowledge goal) on held-out questions.

Data (``bench/knowledge_data``, written once and never tuned against): four short documents about
made-up things (a kettle, a town, a VPN client, a cider farm: the base model cannot know them) and
45 facts stated in them. Each fact has three training questions and one held-out bench question,
worded apart from its training questions (22 of 45 also avoid the document's own words).

There is no LLM provider offline, so the training examples are built deterministically, the way a
generation step with paraphrases would write them: every training question of a fact with the fact's
answer (one ``fact`` group per fact), plus each document as plain text. The bench questions are
never trained on. Scores: token F1 and exact match (judge-free) of greedy answers, on the held-out
questions and on the recall probe (training questions); the forgetting check is the perplexity of
``evaluate/data/general_text.md`` (never trained on; the knowledge goal's replay and guard text is
``train/data/replay.md``).

Run (loaded 2-core box: ~20-25 min with the style run; ``--skip-style`` and ``--max-steps 32`` ~6-10 min;
README "Goals" has the measured runs and their flags)::

    PYTHONPATH=src nice -n 5 .venv/bin/python bench/knowledge.py [--quick]

Memory columns (``--memory``): the four documents are taught, paragraph by paragraph, to a project
memory (all-MiniLM-L6-v2, offline; ``--memory-embedder hash:256`` for a quick look) and
:data:`MEMORY_HOOK` recalls ``--memories`` items per question through ``api.recall``; the system
message is the one ``ftf chat`` and ``ftf evaluate`` build (``models.context.build_messages``), so
"+memory" rows are the base and tuned models with the project's memory in the prompt. The leakage
split scores them again apart: the questions whose recalled notes state the reference answer word
for word (open book: the model can copy it) and those whose notes do not.

Curve (``--curve``, :mod:`knowledge_curve`): one knowledge run with its stopping rules off, the
recall probe's F1, held-out F1 and general-text perplexity at every probe step, as CSV and PNG.
``--model gemma3-270m`` (``make bench-models`` installs it) runs the bench or the curve on another
base; ``--size-plot`` draws every model's curve against its parameter count. ``--rank R`` and
``--modules q_proj,...`` change the knowledge run's LoRA (fewer adapted weights; README has the curves).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "knowledge_data"
MEMORY_HOOK: Callable[[str], str] | None = None
"""Question -> notes recalled from memory (None: no memory columns). Set by a memory bench."""


def memory_hook(project: str, k: int, embedder: str = "") -> Callable[[str], str]:
    """Teach every paragraph of the shipped documents to ``project``'s memory; returns question ->
    the system message chat would build with the ``k`` items recalled for it."""
    from finetuneflow import api
    from finetuneflow.memory.config import MemoryConfig
    from finetuneflow.models.context import build_messages

    cfg = MemoryConfig(embedder=embedder)
    for doc in sorted((DATA / "documents").glob("*.md")):
        for para in doc.read_text(encoding="utf-8").split("\n\n"):
            if para.strip() and not para.lstrip().startswith("#"):
                api.teach(project, para.strip(), importance=0.55, source=doc.name, config=cfg)

    def hook(question: str) -> str:
        notes = api.recall(project, question, k, config=cfg)
        return build_messages(None, notes, [], question)[0]["content"]

    return hook


def load_facts() -> list[dict[str, Any]]:
    return json.loads((DATA / "facts.json").read_text(encoding="utf-8"))


def build_dataset(folder: Path, facts: list[dict[str, Any]]) -> None:
    """chat/train.jsonl (every training question of every fact) and text/train.jsonl (the documents)."""
    from finetuneflow.state.datasets import split_path, write_jsonl

    chats = [
        {"id": f"{f['id']}-{i}", "source": f["doc"], "fact": f["id"],
         "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": f["answer"]}]}
        for f in facts for i, q in enumerate(f["train"])
    ]  # fmt: skip
    docs = sorted((DATA / "documents").glob("*.md"))
    texts = [{"id": d.stem, "source": d.name, "text": d.read_text(encoding="utf-8")} for d in docs]
    write_jsonl(split_path(folder, "chat", "train"), chats)
    write_jsonl(split_path(folder, "text", "train"), texts)
    write_jsonl(split_path(folder, "chat", "eval"), [])


def ask(model: Any, tokenizer: Any, questions: list[str], notes: list[str] | None = None) -> list[str]:
    from finetuneflow.models.generate import generate_replies

    convs = [
        ([{"role": "system", "content": n}] if n else []) + [{"role": "user", "content": q}]
        for q, n in zip(questions, notes or [""] * len(questions), strict=True)
    ]
    return generate_replies(model, tokenizer, convs, max_new_tokens=48)


def score(answers: list[str], refs: list[str]) -> dict[str, float]:
    from finetuneflow.text.scores import exact_match, token_f1

    n = max(1, len(refs))
    return {
        "f1": sum(token_f1(a, r) for a, r in zip(answers, refs, strict=True)) / n,
        "em": sum(exact_match(a, r) for a, r in zip(answers, refs, strict=True)) / n,
    }


def train_run(dataset: Path, runs: Path, name: str, cfg: Any) -> tuple[Path, dict[str, Any], float]:
    from finetuneflow.train.step import train

    start = time.time()

    def show(event: Any) -> None:
        if event.stage in ("note", "recipe", "eta", "recall", "early_stop"):
            print(f"  [{name} {time.time() - start:5.0f} s] {event.message}", flush=True)

    summary = train(dataset, runs / name, cfg, on_event=show)
    return runs / name, summary, time.time() - start


def evaluate(run_dir: Path, sets: dict[str, tuple[list[str], list[str]]], with_base: bool) -> dict[str, Any]:
    """Scores of the tuned model (and the base, the adapter switched off) on every set; the sets
    share questions, so each distinct question is asked once per model."""
    from finetuneflow import hardware
    from finetuneflow.evaluate.forgetting import text_perplexity
    from finetuneflow.models.load import load_tuned

    tuned = load_tuned(run_dir)
    amp = partial(hardware.autocast, "cpu", hardware.autocast_dtype("cpu", "auto"))
    questions = sorted({q for qs, _ in sets.values() for q in qs})
    notes = [MEMORY_HOOK(q) for q in questions] if MEMORY_HOOK else None
    out: dict[str, Any] = {}
    with amp():
        sides = {"tuned": _answers(tuned.model, tuned.tokenizer, questions, notes)}
        if with_base:
            with tuned.base() as base:
                sides["base"] = _answers(base, tuned.tokenizer, questions, notes)
    for side, answers in sides.items():
        out[side] = {}
        for name, (qs, refs) in sets.items():
            for suffix, table in answers.items():
                out[side][name + suffix] = score([table[q] for q in qs], refs)
            if notes:  # the leakage split: was the reference answer itself in the recalled notes?
                by_q = dict(zip(questions, notes, strict=True))
                for label, inside in ((" (answer in prompt)", True), (" (answer not in prompt)", False)):
                    pick = [i for i, q in enumerate(qs) if answer_in(refs[i], by_q[q]) == inside]
                    out[side][name + "+memory" + label] = score(
                        [answers["+memory"][qs[i]] for i in pick], [refs[i] for i in pick]
                    ) | {"n": len(pick)}
    out["forgetting"] = text_perplexity(tuned, 512, 4, amp)
    return out


def answer_in(answer: str, notes: str) -> bool:
    """Whether ``notes`` state ``answer`` word for word (case, punctuation and spacing aside): the
    memory then gives the model the answer to copy, an open book."""

    def norm(text: str) -> str:
        return " ".join("".join(c if c.isalnum() or c == "." else " " for c in text.casefold()).split())

    return norm(answer).rstrip(".").strip() in norm(notes)


def _answers(
    model: Any, tokenizer: Any, questions: list[str], notes: list[str] | None
) -> dict[str, dict[str, str]]:
    out = {"": dict(zip(questions, ask(model, tokenizer, questions), strict=True))}
    if notes:
        out["+memory"] = dict(zip(questions, ask(model, tokenizer, questions, notes), strict=True))
    return out


def curve(run_dir: Path) -> list[tuple[int, float, float | None]]:
    from finetuneflow.state import runs as rf

    return [
        (m["step"], m["recall_f1"], m.get("general_change"))
        for m in rf.read_metrics(run_dir)
        if "recall_f1" in m
    ]


def main() -> None:
    from finetuneflow.models.resolve import DEFAULT_MODEL

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="base model (e.g. gemma3-270m)")
    parser.add_argument(
        "--size-plot",
        action="store_true",
        help="no training: every curve under --out (knowledge_curve*.csv) against parameter count",
    )
    parser.add_argument("--quick", action="store_true", help="a smaller step budget (~10 min)")
    parser.add_argument("--lr", type=float, default=0.0, help="knowledge goal's learning rate (0 = sized)")
    parser.add_argument("--max-steps", type=int, default=0, help="knowledge goal's step ceiling (0 = goal's)")
    parser.add_argument("--replay", type=float, default=None, help="replay share (default: the setting's)")
    parser.add_argument(
        "--rehearsal", type=float, default=None, help="self-rehearsal share (default: the setting's)"
    )
    parser.add_argument("--every", type=int, default=0, help="recall probe every N steps (0 = 10 / 12)")
    parser.add_argument("--rank", type=int, default=0, help="LoRA rank of the knowledge run (0 = default)")
    parser.add_argument(
        "--modules", default="", help="LoRA target modules of the knowledge run (q_proj,... ; default all)"
    )
    parser.add_argument("--skip-style", action="store_true", help="only base and the knowledge goal")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument(
        "--curve",
        action="store_true",
        help="one knowledge run, stopping rules off: recall/held-out F1 and general-text perplexity "
        "at every probe step (CSV + PNG under --out; --max-steps, --every)",
    )
    parser.add_argument("--out", type=Path, default=None, help="--curve's folder (default bench/results)")
    parser.add_argument("--memory", action="store_true", help="add base+memory and tuned+memory rows")
    parser.add_argument("--memories", type=int, default=3, help="memory items recalled per question")
    parser.add_argument(
        "--memory-embedder", default="", help="'' = all-MiniLM-L6-v2; hash:256 for a quick look"
    )
    args = parser.parse_args()
    if args.size_plot:
        size_plot(args.out)
        return
    os.environ.setdefault("FTF_HOME", str(Path(tempfile.gettempdir()) / "ftf-bench-home"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.memory:
        global MEMORY_HOOK
        project = f"knowledge-bench-{os.getpid()}"  # a fresh memory each run
        MEMORY_HOOK = memory_hook(project, args.memories, args.memory_embedder)
    from finetuneflow import hardware
    from finetuneflow.train.config import TrainConfig

    threads = hardware.setup_threads(1 if hardware.available_cores() <= 2 else 0)
    facts = load_facts()
    heldout = ([f["heldout"] for f in facts], [f["answer"] for f in facts])
    reworded = ([f["heldout"] for f in facts if f["reworded"]], [f["answer"] for f in facts if f["reworded"]])
    recall = ([f["train"][0] for f in facts][::2], [f["answer"] for f in facts][::2])
    sets = {"held-out": heldout, "reworded": reworded, "recall": recall}
    print(f"knowledge bench: {len(facts)} facts in 4 documents, {len(heldout[0])} held-out questions "
          f"({len(reworded[0])} worded apart from the text), threads {threads}, cores "
          f"{hardware.available_cores()}")  # fmt: skip
    print("training examples built deterministically from the shipped documents and the shipped "
          "training paraphrases (no LLM provider offline); bench questions never trained on")  # fmt: skip
    base_cfg = TrainConfig(base_model=args.model, max_len=256, batch_size=4, grad_accum=1, threads=threads)
    style = replace(base_cfg, goal="style")
    knowledge = replace(base_cfg, goal="knowledge", learning_rate=args.lr,
                        max_steps=args.max_steps or (60 if args.quick else 0))  # fmt: skip
    recall_cfg = replace(knowledge.recall, questions=16, every=args.every or (10 if args.quick else 12))
    if args.replay is not None:
        recall_cfg = replace(recall_cfg, replay=args.replay)
    if args.rehearsal is not None:
        recall_cfg = replace(recall_cfg, rehearsal=args.rehearsal)
    knowledge = replace(knowledge, recall=recall_cfg)
    if args.rank:
        knowledge = replace(knowledge, lora=replace(knowledge.lora, r=args.rank, alpha=2 * args.rank))
    if args.modules:
        knowledge = replace(knowledge, lora=replace(knowledge.lora, target_modules=args.modules))
    if args.curve:
        run_curve(knowledge, facts, heldout, args)
        return
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ftf-knowledge-") as tmp:
        dataset = Path(tmp) / "dataset"
        build_dataset(dataset, facts)
        runs = Path(tmp) / "runs"
        todo = [("knowledge", knowledge)] + ([] if args.skip_style else [("style", style)])
        for name, cfg in todo:
            run_dir, summary, seconds = train_run(dataset, runs, name, cfg)
            results[name] = evaluate(run_dir, sets, with_base="base" not in results)
            results[name] |= {"steps": summary["steps"], "best_step": summary["best_step"],
                              "seconds": round(seconds), "recipe": summary["recipe"],
                              "curve": curve(run_dir)}  # fmt: skip
            if "base" not in results:
                results["base"] = results[name]["base"]
    report(results, sets)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def run_curve(
    knowledge: Any, facts: list[dict[str, Any]], heldout: tuple[list[str], list[str]], args: Any
) -> None:
    """``--curve``: see bench/knowledge_curve.py."""
    import knowledge_curve as kc

    from finetuneflow.models.resolve import DEFAULT_MODEL

    steps, every = args.max_steps or 64, args.every or 8
    cfg = kc.curve_config(knowledge, steps, every)
    out = args.out or kc.RESULTS
    stem = kc.curve_name(args.model, DEFAULT_MODEL) + ("_rehearsal" if cfg.recall.rehearsal else "")
    with tempfile.TemporaryDirectory(prefix="ftf-knowledge-curve-") as tmp:
        dataset = Path(tmp) / "dataset"
        build_dataset(dataset, facts)
        run_dir, summary, seconds = train_run(dataset, Path(tmp) / "runs", "knowledge", cfg)
        print(f"trained {summary['steps']} steps in {seconds:.0f} s; measuring every checkpoint", flush=True)
        start = time.time()
        rows = kc.with_recall(kc.measure_checkpoints(run_dir, *heldout, ask, score), curve(run_dir))
        params, embedding = kc.count_params(
            Path(json.loads((run_dir / "config.json").read_text())["model_dir"])
        )
    lr = summary["recipe"]["learning_rate"]
    modules = "" if cfg.lora.target_modules == "all-linear" else f" on {cfg.lora.target_modules}"
    shares = (("replay", cfg.recall.replay), ("self-rehearsal", cfg.recall.rehearsal))
    mixed = "".join(f", {name} {share:.0%}" for name, share in shares if share)
    head = (
        f"{args.model} ({params / 1e6:.0f}M), knowledge goal, lr {lr:g}, LoRA r{cfg.lora.r}{modules}{mixed},"
    )
    title = f"{head}{chr(10) if modules or mixed else ' '}probe every {every} steps (stopping rules off)"
    kc.print_table(rows)
    meta = {"model": args.model, "params": params, "embedding_params": embedding, "learning_rate": lr,
            "lora_r": cfg.lora.r, "lora_modules": cfg.lora.target_modules, "max_steps": steps,
            "every": every, "replay": cfg.recall.replay, "rehearsal": cfg.recall.rehearsal,
            "train_seconds": round(seconds),
            "measure_seconds": round(time.time() - start), "threads": cfg.threads,
            "date": time.strftime("%Y-%m-%d", time.gmtime())}  # fmt: skip
    written = [kc.write_csv(rows, out / f"{stem}.csv"), kc.plot(rows, out / f"{stem}.png", title),
               kc.write_meta(out / f"{stem}.json", meta)]  # fmt: skip
    print(f"\nwrote {', '.join(map(str, written))}")


def size_plot(out: Path | None) -> None:
    """``--size-plot``: the curves under ``out`` against parameter count (table + PNG)."""
    import knowledge_curve as kc

    folder = out or kc.RESULTS
    curves = [kc.read_curve(p) for p in sorted(folder.glob("knowledge_curve*.csv"))]
    if not curves:
        raise SystemExit(f"no knowledge_curve*.csv in {folder}: run --curve first")
    table = kc.size_table(curves)
    kc.print_size_table(table)
    title = "Knowledge goal against model size: the best checkpoints of each curve (--curve, LoRA r16)"
    print(f"\nwrote {kc.plot_size(table, curves, folder / 'knowledge_size.png', title)}")


def report(results: dict[str, Any], sets: dict[str, Any]) -> None:
    columns = [("base", results["base"])] + [
        (f"tuned ({name})", results[name]["tuned"]) for name in ("style", "knowledge") if name in results
    ]
    names = list(sets) + [n + "+memory" for n in sets if MEMORY_HOOK]
    if MEMORY_HOOK:
        names += [f"{n}+memory (answer {w} prompt)" for n in sets for w in ("in", "not in")]
    print("\n| set | " + " | ".join(c for c, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name in names:
        cells = [f"F1 {c[name]['f1']:.2f} / EM {c[name]['em']:.2f}" for _, c in columns]
        n = columns[0][1][name].get("n", len(sets[name.split("+memory")[0]][0]))
        print(f"| {name} ({n}) | " + " | ".join(cells) + " |")
    if not MEMORY_HOOK:
        print("(base+memory / tuned+memory: run with --memory)")
    for name in ("style", "knowledge"):
        if name not in results:
            continue
        r, f = results[name], results[name]["forgetting"]
        print(f"\n{name}: {r['steps']} steps in {r['seconds']} s (kept step {r['best_step']}), lr "
              f"{r['recipe']['learning_rate']:g}; general-text perplexity {f['base_perplexity']:.2f} -> "
              f"{f['tuned_perplexity']:.2f} ({f['change']:+.1%})")  # fmt: skip
        if r["curve"]:
            print("  recall F1 by step (general-text perplexity change on the guard text):")
            for step, f1, change in r["curve"]:
                bar = "#" * round(f1 * 40)
                guard = "" if change is None else f" {change:+.1%}"
                print(f"  {step:5d} {f1:.3f} {bar}{guard}")
    k, b = results.get("knowledge"), results["base"]
    if k:
        gain = k["tuned"]["held-out"]["f1"] - b["held-out"]["f1"]
        checks = [
            ("recall F1 >= 0.6", k["tuned"]["recall"]["f1"] >= 0.6),
            ("held-out F1 over base >= 0.15", gain >= 0.15),
            ("general perplexity up <= 10%", k["forgetting"]["change"] <= 0.10),
        ]
        print("\ntargets: " + "; ".join(f"{t}: {'met' if ok else 'MISSED'}" for t, ok in checks))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
