"""The knowledge recipe's data: paraphrases of a generated question are kept as examples of one
``fact`` group; dedup keeps them (it still drops real duplicates) and the split keeps a group on one
side."""

from __future__ import annotations

import hashlib
from typing import Any

from finetuneflow.dataset.finalize import finalize
from finetuneflow.dataset.generate import ChunkIn, GenerateConfig, Generated
from finetuneflow.dataset.prompts import generation_messages
from finetuneflow.dataset.quality import Pair, dedup_rows, validate_pairs
from finetuneflow.text.dedup import DedupConfig

WORDINGS = [
    "What does error code E21 mean on the Proofwell P3?",
    "What does the error code E21 mean on the Proofwell P3?",  # near-identical on purpose
    "On a Proofwell P3, what is error E21?",
]


def _row(i: int, question: str, fact: str | None, source: str = "manual.md") -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": f"r{i}", "source": source, "origin": "llm", "chunk": f"{source}#0",
        "messages": [{"role": "user", "content": question},
                     {"role": "assistant", "content": "A clogged filter."}],
    }  # fmt: skip
    return row | ({"fact": fact} if fact else {})


def test_validate_pairs_reads_paraphrases_and_drops_repeats_and_scraps() -> None:
    pairs, problems = validate_pairs(
        {"examples": [{"question": WORDINGS[0], "answer": "A clogged filter.",
                       "paraphrases": [WORDINGS[2], WORDINGS[0], "short", 7, WORDINGS[2].upper()]}]}
    )  # fmt: skip
    assert not problems and pairs[0].paraphrases == (WORDINGS[2],)
    assert [w.question for w in pairs[0].wordings()] == [WORDINGS[0], WORDINGS[2]]
    assert {w.answer for w in pairs[0].wordings()} == {"A clogged filter."}


def test_dedup_keeps_the_paraphrases_of_one_fact_but_not_a_near_duplicate_of_another() -> None:
    grouped = [_row(i, q, "f1") for i, q in enumerate(WORDINGS)]
    kept, dropped = dedup_rows(grouped, DedupConfig())
    assert [r["id"] for r in kept] == ["r0", "r1", "r2"] and not dropped
    ungrouped = [_row(i, q, None) for i, q in enumerate(WORDINGS)]
    kept, dropped = dedup_rows(ungrouped, DedupConfig())
    assert "r1" not in {r["id"] for r in kept} and dropped[0]["reason"] == "near-duplicate question"
    other_fact = [_row(0, WORDINGS[0], "f1"), _row(1, WORDINGS[1], "f2")]
    assert len(dedup_rows(other_fact, DedupConfig())[0]) == 1  # another fact's near-copy is a duplicate
    exact = [_row(0, WORDINGS[0], "f1"), _row(1, WORDINGS[0], "f1")]
    assert len(dedup_rows(exact, DedupConfig())[0]) == 1  # an exact repeat is never a paraphrase


def test_split_keeps_every_wording_of_a_fact_on_one_side() -> None:
    rows = [
        _row(
            100 * f + k,
            f"Wording {k}: what is {hashlib.sha256(str(f).encode()).hexdigest()[:32]}?",
            f"fact{f}",
            f"doc{f % 6}.md",
        )
        for f in range(60)
        for k in range(3)
    ]
    done = finalize(
        rows, scrub_pii=False, max_tokens=10_000, count=lambda texts: [len(t.split()) for t in texts],
        eval_fraction=0.2, text_eval_fraction=0.2, heldout_fraction=0.3, seed=3,
    )  # fmt: skip
    side = {}
    for name, part in done.splits.items():
        for row in part:
            assert side.setdefault(row["fact"], name) == name, row["fact"]
    assert {"train", "heldout"} <= set(side.values())  # the held-out share took whole facts
    assert sum(len(p) for p in done.splits.values()) == len(rows)  # no paraphrase lost to dedup


def test_generation_asks_for_paraphrases_only_when_set() -> None:
    asked = generation_messages("Some text.", 2, 0, False, paraphrases=3)[-1]["content"]
    assert '"paraphrases"' in asked and "3 other ways" in asked
    assert "paraphrases" not in generation_messages("Some text.", 2, 0, False)[-1]["content"]
    assert "paraphrases: must be 0..5" in GenerateConfig(paraphrases=9).problems()


def test_stored_wordings_share_a_fact_id() -> None:
    from finetuneflow.dataset import pool
    from finetuneflow.state import schema, session_scope
    from finetuneflow.state.repo import get_or_create_project

    with session_scope() as s:
        pid = get_or_create_project(s, "p").id
        file = schema.File(project_id=pid, path="manual.md", stored_as="raw/manual.md", sha256="x" * 64,
                           size=1, status="ok")  # fmt: skip
        s.add(file)
        s.flush()
        chunk = schema.Chunk(
            project_id=pid, file_id=file.id, kind="text", idx=0, text="E21: filter.", n_tokens=5
        )
        s.add(chunk)
        s.flush()
        result = Generated(ChunkIn(chunk.id, "manual.md", chunk.text, 5))
        result.pairs = [
            Pair(WORDINGS[0], "A clogged filter.", paraphrases=(WORDINGS[2],)),
            Pair("What is error E5?", "The lid is open."),
        ]
        pool.store_generated(s, pid, "default", result)
        records = [pool.as_record(r) for r in pool.pool_rows(s, pid, "default")]
    facts = [r.get("fact") for r in records]
    assert len(records) == 3 and facts[0] is not None and facts.count(facts[0]) == 2
    assert facts.count(None) == 1  # a question without paraphrases needs no group
