"""The report's lead: does the tuned model answer better? Read from the run's ``evaluation.json``
(the evaluate step decided the verdict and wrote its sentence; the report only shows it).

Three parts: the verdict sentence (and the memory's, when the memory answered too) with a table of
means per question set and the forgetting check (:func:`lead`), and one per-question table per set
with a column per side: base, tuned, base+memory, tuned+memory (:func:`answer_tables`).
"""

from __future__ import annotations

from typing import Any

from finetuneflow.text.verdict import MEMORY_PEERS, SIDES

RULE = (
    "Verdict rule: per question, tuned token F1 minus base token F1; a seeded paired bootstrap over "
    "the questions gives a {confidence:.0%} interval of the mean difference: better or worse only "
    "when the interval excludes 0, otherwise the same."
)
STALE = "Answers were not scored (evaluated by an older version): run `ftf evaluate` and export again."


def lead(evaluation: dict[str, Any]) -> list[str]:
    """Markdown lines: the verdict sentence, the means per set, the forgetting check."""
    if "sets" not in evaluation:
        return [STALE, ""]
    verdict = evaluation.get("verdict")
    if not verdict:
        return ["No questions to answer: the dataset has no eval-split, held-out or training chat rows.", ""]
    lines = [verdict["sentence"], ""]
    for v in (evaluation.get("memory_verdicts") or {}).values():
        lines += [v["sentence"], ""]
        if v.get("excluding_source"):
            lines += [v["excluding_source"]["sentence"], ""]
    lines += [*_means_table(evaluation["sets"]), ""]
    forgetting = _forgetting(evaluation)
    if forgetting:
        lines += [forgetting, ""]
    lines += [RULE.format(confidence=verdict["confidence"]), ""]
    return lines


def _means_table(sets: dict[str, Any]) -> list[str]:
    lines = [
        "| question set | questions | token F1 | ROUGE-L | exact match | answer found | answer NLL | judge |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in sets.values():
        base, tuned = s["means"]["base"], s["means"]["tuned"]
        cells = [_pair(base.get(k), tuned.get(k)) for k in ("f1", "rouge_l", "em", "contains", "nll")]
        judge = _pair((base.get("judge") or {}).get("score"), (tuned.get("judge") or {}).get("score"))
        lines.append(f"| {s['label']} | {s['questions']} | " + " | ".join([*cells, judge]) + " |")
        for side, peer in MEMORY_PEERS.items():
            if side in s["means"]:
                without, mem = s["means"][peer], s["means"][side]
                cells = [
                    _pair(without.get(k), mem.get(k)) for k in ("f1", "rouge_l", "em", "contains", "nll")
                ]
                judge = _pair(
                    (without.get("judge") or {}).get("score"), (mem.get("judge") or {}).get("score")
                )
                lines.append(
                    f"| {s['label']}: {peer} → {SIDES[side]} | {s['questions']} | "
                    + " | ".join([*cells, judge])
                    + " |"
                )
        lines += _excluded_rows(s)
    lines += [
        "",
        "Each cell: base → tuned (a memory row: the model without → with memories in its prompt). "
        "Answer NLL: nats per token of the reference answer (lower is better).",
    ]
    return lines


def _excluded_rows(s: dict[str, Any]) -> list[str]:
    """The memory rows again with each question's own source left out of its recall, headed by how
    many questions had it in the prompt (open book)."""
    leak = s.get("leakage")
    if not leak or not leak.get("means_excluding_source"):
        return []
    out = []
    for side, peer in MEMORY_PEERS.items():
        without, mem = s["means"][peer], leak["means_excluding_source"][side]
        cells = [_pair(without.get(k), mem.get(k)) for k in ("f1", "rouge_l", "em", "contains", "nll")]
        out.append(
            f"| {s['label']}: {peer} → {SIDES[side]}, own source left out ({leak['leaked']} of "
            f"{leak['questions']} had it in the prompt) | {s['questions']} | " + " | ".join(cells) + " | - |"
        )
    return out


def _forgetting(evaluation: dict[str, Any]) -> str:
    text = evaluation.get("forgetting")
    general = evaluation["sets"].get("general")
    parts = []
    if text:
        parts.append(
            f"perplexity on general text {text['base_perplexity']:.2f} → {text['tuned_perplexity']:.2f} "
            f"({100 * text['change']:+.1f}%)"
        )
    if general:
        found = [sum(r[side]["contains"] for r in general["rows"]) for side in ("base", "tuned")]
        n = general["questions"]
        parts.append(f"general questions answered {found[0]:.0f}/{n} → {found[1]:.0f}/{n}")
    return ("Forgetting check: " + "; ".join(parts) + ".") if parts else ""


def answer_tables(evaluation: dict[str, Any], width: int = 300) -> list[str]:
    """Markdown lines: per set, every question with the reference, every side's answer (base, tuned,
    and base+memory, tuned+memory when the memory answered) and their scores; with memory, the ids
    and sources of the memories recalled for it."""
    lines: list[str] = []
    for s in evaluation.get("sets", {}).values():
        sides = [side for side in SIDES if s["rows"] and side in s["rows"][0]]
        judged = any("judge" in r["base"] for r in s["rows"])
        remembered = any("memory" in r for r in s["rows"])
        head = ["#", "question", "reference", *(f"{SIDES[side]} answer" for side in sides)]
        head += [_f1_head(sides), "ROUGE-L", "EM"]
        head += ["judge"] * judged + ["memories recalled"] * remembered
        lines += [
            f"### {s['label'][:1].upper()}{s['label'][1:]}: {_count(s['questions'])}",
            "",
            "| " + " | ".join(head) + " |",
            "|---" * len(head) + "|",
        ]
        for i, r in enumerate(s["rows"], 1):
            cells = [_cell(r["question"], width), _cell(r["reference"], width)]
            cells += [_cell(r[side]["answer"], width) for side in sides]
            cells.append(f1_cell(r, sides))
            cells += [_pair(r["base"][k], r["tuned"][k]) for k in ("rouge_l", "em")]
            if judged:
                cells.append(" → ".join(_grade(r[side].get("judge")) for side in sides))
            if remembered:
                cells.append(_recalled(r.get("memory")))
            lines.append(f"| {i} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _f1_head(sides: list[str]) -> str:
    return "F1" if len(sides) == 2 else "F1 " + " / ".join(SIDES[side] for side in sides)


def f1_cell(row: dict[str, Any], sides: list[str]) -> str:
    """Token F1 of each side: ``base → tuned``, or ``b / t / b+m / t+m`` with the memory sides."""
    if len(sides) == 2:
        return _pair(row["base"]["f1"], row["tuned"]["f1"])
    return " / ".join(f"{row[side]['f1']:.2f}" for side in sides)


def _recalled(memory: dict[str, Any] | None) -> str:
    """The recalled items of a row: ``#id (source)``, those left out of the prompt marked."""
    if not memory or not memory["retrieved"]:
        return "-"
    kept, own = set(memory["in_prompt"]), set(memory.get("own_source") or ())
    parts = [
        f"#{m['id']}"
        + (f" ({m['source']})" if m.get("source") else "")
        + (" [own source]" if m["id"] in own else "")
        + ("" if m["id"] in kept else " [did not fit]")
        for m in memory["retrieved"]
    ]
    return _cell("; ".join(parts), 300)


def _count(n: int) -> str:
    return f"{n} question" + ("" if n == 1 else "s")


def _grade(judge: dict[str, Any] | None) -> str:
    if not judge:
        return "-"
    return str(judge["verdict"]) if judge.get("verdict") else "error"


def _pair(base: float | None, tuned: float | None) -> str:
    return "-" if base is None or tuned is None else f"{base:.2f} → {tuned:.2f}"


def _cell(text: str, width: int) -> str:
    """A table cell: one line, pipes escaped, cut at ``width`` characters."""
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= width else flat[: width - 1] + "…"
