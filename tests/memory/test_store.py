"""The memory's operations over the hashing embedder: teach and recall, correct (the correction
outranks what it corrects, the history is kept), forget then purge, expiry, and the index kept in
step with the records."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import update

from finetuneflow.memory import items
from finetuneflow.memory.config import MemoryConfig
from finetuneflow.memory.index import INDEX_FILE
from finetuneflow.memory.store import Memory
from finetuneflow.state import session_scope
from finetuneflow.state.schema import MemoryItem
from memory.conftest import FACTS

Open = Callable[..., Memory]


def taught(memory: Memory) -> list[int]:
    return [memory.teach(fact)["id"] for fact in FACTS]


def test_recall_finds_the_fact_asked_about_with_its_score_parts(open_memory: Open) -> None:
    memory = open_memory()
    ids = taught(memory)
    hits = memory.recall("How long does the warranty last?", k=2)
    assert [h["id"] for h in hits][0] == ids[0] and len(hits) == 2
    top = hits[0]
    assert (top["kind"], top["source"], top["importance"]) == ("fact", "taught", 0.75)
    parts = top["parts"]
    assert set(parts) == {"vector", "bm25", "similarity", "importance", "recency", "superseded", "score"}
    assert parts["recency"] == pytest.approx(1.0, abs=1e-3) and parts["bm25"] == 1.0
    assert top["score"] == pytest.approx(
        0.7 * parts["similarity"] + 0.2 * 0.75 + 0.1 * parts["recency"], abs=1e-3
    )


def test_a_correction_outranks_what_it_corrects_and_keeps_the_history(open_memory: Open) -> None:
    memory = open_memory()
    ids = taught(memory)
    fix = memory.correct("How long does the warranty last?", "The warranty lasts three years.")
    assert (fix["kind"], fix["corrects"], fix["importance"]) == ("correction", ids[0], 0.95)
    hits = memory.recall("How long does the warranty last?", k=5)
    order = [h["id"] for h in hits]
    assert order.index(fix["id"]) < order.index(ids[0])
    old = hits[order.index(ids[0])]
    assert old["superseded_by"] == fix["id"] and old["parts"]["superseded"]
    assert [h["text"] for h in memory.history(ids[0])] == [FACTS[0], "The warranty lasts three years."]
    by_id = memory.correct(ids[1], "Error E21 means the filter is blocked.")  # by id as well
    assert memory.recall("What does error E21 mean?", k=1)[0]["id"] == by_id["id"]


def test_correct_refuses_a_query_that_matches_nothing(open_memory: Open) -> None:
    memory = open_memory()
    with pytest.raises(LookupError, match="nothing in memory matches"):
        memory.correct("warranty", "x")  # an empty memory
    taught(memory)
    with pytest.raises(LookupError, match="nothing in memory matches"):
        memory.correct("quantum chromodynamics lattice", "x")
    with pytest.raises(LookupError, match="no memory item #99"):
        memory.correct(99, "x")


def test_importance_and_recency_order_equally_similar_items(open_memory: Open) -> None:
    memory = open_memory(hybrid=False)
    low = memory.teach("The pump is blue.", importance=0.3)
    high = memory.teach("The pump is blue.", importance=0.9)
    assert [h["id"] for h in memory.recall("pump blue")] == [high["id"], low["id"]]
    old = memory.teach("The pump is blue.", importance=0.9)
    with session_scope() as s:  # the third was updated 60 days ago: two half-lives
        s.execute(
            update(MemoryItem)
            .where(MemoryItem.id == old["id"])
            .values(updated_at=items.now() - timedelta(days=60))
        )
    hits = {h["id"]: h for h in memory.recall("pump blue")}
    assert hits[old["id"]]["parts"]["recency"] == pytest.approx(0.25, abs=1e-3)
    assert hits[old["id"]]["score"] < hits[high["id"]]["score"]


def test_forget_is_soft_until_purge(open_memory: Open) -> None:
    memory = open_memory()
    ids = taught(memory)
    memory.forget(ids[1])
    assert ids[1] not in [h["id"] for h in memory.recall("What does error E21 mean?")]
    assert [r["id"] for r in memory.listing(forgotten=True)] == [ids[1]]
    assert memory.status()["forgotten"] == 1 and len(memory.index) == 2
    with pytest.raises(LookupError):
        memory.forget(ids[1])  # already forgotten
    assert memory.purge()["ids"] == [ids[1]]
    assert memory.listing(forgotten=True) == [] and memory.status()["forgotten"] == 0
    with pytest.raises(LookupError):
        memory.history(ids[1])


def test_expired_items_leave_recall_and_purge_deletes_them(open_memory: Open) -> None:
    memory = open_memory()
    keep = memory.teach("The canteen opens at noon.")
    gone = memory.teach("The canteen opens at eleven this week.", expires_in_days=0)
    later = memory.teach("The canteen closes at two.", expires_in_days=7)
    assert {h["id"] for h in memory.recall("When does the canteen open?")} == {keep["id"], later["id"]}
    assert memory.status()["expired"] == 1
    assert memory.purge()["ids"] == [gone["id"]]
    assert {r["id"] for r in memory.listing()} == {keep["id"], later["id"]}


def test_list_filters_by_kind_and_tag(open_memory: Open) -> None:
    memory = open_memory()
    memory.teach("Fact one.", tags=["a"])
    memory.teach("Fact two.", tags=["b"])
    memory.remember_exchange("What is one?", "One.", [1], rating=5)
    assert [r["text"] for r in memory.listing(tag="a")] == ["Fact one."]
    (chat,) = memory.listing(kind="interaction")
    assert chat["text"] == "Q: What is one?\nA: One." and chat["importance"] == 0.35
    assert chat["meta"] == {"retrieved": [1], "rating": 5}
    assert memory.status()["by_kind"] == {"fact": 2, "interaction": 1}
    with pytest.raises(ValueError, match="importance"):
        memory.teach("x", importance=1.5)
    with pytest.raises(ValueError, match="empty"):
        memory.teach("  ")


def test_the_index_is_repaired_from_the_records(open_memory: Open) -> None:
    memory = open_memory()
    ids = taught(memory)
    folder = memory.folder
    (folder / INDEX_FILE).unlink()  # lost
    again = open_memory()
    assert again.index.ids() == set(ids) and again.status()["index"]["ok"]
    (folder / INDEX_FILE).write_bytes(b"garbage")  # damaged
    assert open_memory().index.ids() == set(ids)
    with session_scope() as s:  # a record the index never saw (a crash before the index write)
        vector = again.embedder.embed(["The boiler needs a yearly service."])[0]
        row = MemoryItem(
            project_id=again.project_id,
            kind="fact",
            text="The boiler needs a yearly service.",
            importance=0.75,
            tags=[],
            source="x",
            embedding=vector.tobytes(),
            embedder=again.embedder.name,
            meta={},
        )
        s.add(row)
        s.flush()
        new_id = row.id
    with session_scope() as s:  # and one the index holds but the records forgot
        s.get(MemoryItem, ids[2]).forgotten_at = items.now()  # type: ignore[union-attr]
    repaired = open_memory()
    assert repaired.repaired == {"missing": 1, "extra": 1}
    assert repaired.index.ids() == {ids[0], ids[1], new_id}
    assert repaired.recall("yearly boiler service", k=1)[0]["id"] == new_id
    # an open memory notices what another process wrote, too
    assert again.recall("yearly boiler service", k=1)[0]["id"] == new_id


class SameVector:
    """An embedder that sees no difference between texts: only BM25 can tell them apart."""

    name, dim = "same:4", 4

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.tile(np.array([0.5, 0.5, 0.5, 0.5], dtype="float32"), (len(texts), 1))


def test_hybrid_finds_by_words_what_the_vectors_miss() -> None:
    vector_only = Memory("p", MemoryConfig(hybrid=False), SameVector())
    ids = [vector_only.teach(f)["id"] for f in FACTS]
    assert vector_only.recall("E21", k=1)[0]["id"] != ids[1]  # a tie, broken by the newest id
    hybrid = Memory("p", MemoryConfig(hybrid=True), SameVector())
    top = hybrid.recall("E21", k=1)[0]
    assert top["id"] == ids[1] and top["parts"]["bm25"] == 1.0


def test_the_project_keeps_its_embedder(open_memory: Open) -> None:
    open_memory().teach("Fact.")
    assert Memory("p").embedder.name == "hash:256"  # no embedder named: the project's
    other = Memory("p", MemoryConfig(embedder="hash:64"))
    assert other.status()["index"]["needs_sync"] == 1 and not other.status()["index"]["ok"]
    assert other.sync() == {"added": 0, "reembedded": 1}
    assert other.status()["index"]["ok"] and other.recall("Fact", k=1)[0]["embedder"] == "hash:64"
