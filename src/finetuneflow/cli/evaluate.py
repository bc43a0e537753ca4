"""``ftf evaluate``: does the tuned model answer better than the base? Scored answers per question
set, the forgetting check, eval losses, and the verdict sentence last."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from finetuneflow.cli.common import Command, ConfigFile, Project, RunId, console, fail, opt, settings
from finetuneflow.cli.provider import BaseUrl, KeyEnv, KeyFile, Model, Preset, path_text


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` to ``app``."""
    app.command("evaluate", cls=Command)(evaluate)


def evaluate(
    project: Project = "default",
    run: RunId = None,
    answers: Annotated[int | None, opt("evaluate", "answers")] = None,
    recall: Annotated[int | None, opt("evaluate", "recall")] = None,
    forgetting: Annotated[bool | None, opt("evaluate", "forgetting", "--forgetting/--no-forgetting")] = None,
    max_new_tokens: Annotated[int | None, opt("evaluate", "max_new_tokens")] = None,
    judge: Annotated[bool | None, opt("evaluate", "judge", "--judge/--no-judge")] = None,
    memory: Annotated[str | None, opt("evaluate", "memory")] = None,
    memories: Annotated[int | None, opt("evaluate", "memories")] = None,
    exclude_source: Annotated[
        bool | None,
        opt("evaluate", "memory_exclude_source", "--exclude-own-source/--no-exclude-own-source"),
    ] = None,
    preset: Preset = None,
    base_url: BaseUrl = None,
    model: Model = None,
    api_key_env: KeyEnv = None,
    api_key_file: KeyFile = None,
    config: ConfigFile = None,
) -> None:
    """Compare base and tuned: their answers to the run's questions, scored; the forgetting check.
    When the project's memory has items, base+memory and tuned+memory answer too.

    The config file may hold "evaluate" and "provider" sections; the provider grades answers with --judge.
    """
    from finetuneflow import api
    from finetuneflow.cli.progress import RichProgress
    from finetuneflow.dataset.presets import ProviderConfig
    from finetuneflow.evaluate.step import EvalConfig

    try:
        cfg = settings(
            EvalConfig, config, "evaluate", answers=answers, recall=recall, forgetting=forgetting,
            max_new_tokens=max_new_tokens, judge=judge, memory=memory, memories=memories,
            memory_exclude_source=exclude_source,
        )  # fmt: skip
        provider = None
        if cfg.judge:
            provider = settings(
                ProviderConfig, config, "provider", preset=preset, base_url=base_url, model=model,
                api_key_env=api_key_env, api_key_file=path_text(api_key_file),
            )  # fmt: skip
        with RichProgress() as sink:
            result = api.evaluate(project, run, cfg, sink, provider)
    except (ValueError, LookupError, FileNotFoundError, RuntimeError) as err:
        fail(err)
    show(result)


def show(result: dict[str, Any]) -> None:
    """Print the answer tables per set, the summary per set, the losses, then the verdict."""
    for s in result["sets"].values():
        console.print(_answer_table(s))
    console.print(_summary_table(result["sets"]))
    forgetting = result.get("forgetting")
    if forgetting:
        console.print(
            f"general-text perplexity: base {forgetting['base_perplexity']:.2f} → tuned "
            f"{forgetting['tuned_perplexity']:.2f} ({100 * forgetting['change']:+.1f}%)"
        )
    table = Table("eval split", "examples", "base loss", "tuned loss", "base ppl", "tuned ppl")
    for kind, v in result["losses"].items():
        table.add_row(
            kind, str(v["examples"]), f"{v['base_loss']:.3f}", f"{v['tuned_loss']:.3f}",
            f"{v['base_perplexity']:.1f}", f"{v['tuned_perplexity']:.1f}",
        )  # fmt: skip
    console.print(table)
    verdict = result.get("verdict")
    text = verdict["sentence"] if verdict else "No questions to answer: nothing to compare."
    console.print(_bold(escape(text)))
    for v in (result.get("memory_verdicts") or {}).values():
        console.print(_bold(escape(v["sentence"])))
        if v.get("excluding_source"):  # the same without each question's own source (open book)
            console.print(_bold(escape(v["excluding_source"]["sentence"])))


def _pair(row: dict[str, Any], key: str) -> str:
    base, tuned = row["base"].get(key), row["tuned"].get(key)
    return "-" if base is None or tuned is None else f"{base:.2f}→{tuned:.2f}"


def _sides(s: dict[str, Any]) -> list[str]:
    from finetuneflow.text.verdict import SIDES

    return [side for side in SIDES if side in s["means"]]


def _answer_table(s: dict[str, Any]) -> Table:
    from finetuneflow.text.verdict import SIDES

    sides = _sides(s)
    f1 = "F1" if len(sides) == 2 else "F1 " + " / ".join(SIDES[side] for side in sides)
    table = Table(
        "#", "question", "reference", *(SIDES[side] for side in sides), f1, "ROUGE-L", "EM",
        title=f"{s['label']}: {s['questions']} questions", show_lines=True,
    )  # fmt: skip
    for i, r in enumerate(s["rows"], 1):
        scores = _pair(r, "f1") if len(sides) == 2 else " / ".join(f"{r[side]['f1']:.2f}" for side in sides)
        table.add_row(
            str(i), _cut(r["question"]), _cut(r["reference"]), *(_cut(r[side]["answer"]) for side in sides),
            scores, _pair(r, "rouge_l"), _pair(r, "em"),
        )  # fmt: skip
    return table


def _summary_table(sets: dict[str, Any]) -> Table:
    from finetuneflow.text.verdict import MEMORY_PEERS, SIDES

    table = Table("question set", "n", "token F1", "ROUGE-L", "exact match", "answer found", "answer NLL",
                  "judge", title="base → tuned, means per set")  # fmt: skip
    for s in sets.values():
        base, tuned = s["means"]["base"], s["means"]["tuned"]
        cells = [_means(base, tuned, k) for k in ("f1", "rouge_l", "em", "contains", "nll")]
        grades = (base.get("judge") or {}).get("score"), (tuned.get("judge") or {}).get("score")
        grade = "-" if None in grades else f"{grades[0]:.2f} → {grades[1]:.2f}"
        table.add_row(s["label"], str(s["questions"]), *cells, grade)
        for side, peer in MEMORY_PEERS.items():
            if side in s["means"]:  # one more row per memory side: its model without → with memory
                mem, without = s["means"][side], s["means"][peer]
                cells = [_means(without, mem, k) for k in ("f1", "rouge_l", "em", "contains", "nll")]
                table.add_row(f"  {SIDES[peer]} → {SIDES[side]}", str(s["questions"]), *cells, "-")
        leak = s.get("leakage") or {}
        for side, mem in (leak.get("means_excluding_source") or {}).items():
            without = s["means"][MEMORY_PEERS[side]]
            cells = [_means(without, mem, k) for k in ("f1", "rouge_l", "em", "contains", "nll")]
            label = f"  {SIDES[side]}, own source out ({leak['leaked']} leaked)"
            table.add_row(label, str(s["questions"]), *cells, "-")
    return table


def _means(base: dict[str, Any], tuned: dict[str, Any], key: str) -> str:
    if base.get(key) is None or tuned.get(key) is None:
        return "-"
    return f"{base[key]:.2f} → {tuned[key]:.2f}"


def _cut(text: str, width: int = 70) -> str:
    flat = " ".join(text.split())
    return escape(flat if len(flat) <= width else flat[: width - 1] + "…")


def _bold(text: str) -> str:
    """Markdown's **x** as Rich's bold."""
    parts = text.split("**")
    return "".join(f"[bold]{p}[/bold]" if i % 2 else p for i, p in enumerate(parts))
