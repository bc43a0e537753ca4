"""Review core: listing, search, edits with history, soft delete, approval, ratings, counts. (What a build
keeps of the reviewed pool is tested through the build, in test_step.py.)"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from finetuneflow.dataset import review
from finetuneflow.state.db import session_scope
from finetuneflow.state.repo import get_or_create_project
from finetuneflow.state.schema import Example

SYS = {"role": "system", "content": "You answer questions about the Brindle printer."}
_uids = itertools.count()


def add(
    project: str = "p",
    dataset: str = "d",
    *,
    q: str = "What does error E4 mean?",
    a: str = "The cover is open.",
    **cols: Any,
) -> int:
    """Insert one example row (a chat unless ``kind='text'``) and return its id."""
    if cols.get("kind") == "text":
        cols.setdefault("text", f"{q} {a}")
    else:
        cols.setdefault("messages", [{"role": "user", "content": q}, {"role": "assistant", "content": a}])
    with session_scope() as s:
        pid = get_or_create_project(s, project).id
        row = Example(
            project_id=pid, dataset=dataset, uid=f"u{next(_uids)}", **{"kind": "chat", "split": "", **cols}
        )
        s.add(row)
        s.flush()
        return row.id


def snapshot() -> dict[int, dict[str, Any]]:
    """Every example row's columns (except the update time), by id."""
    with session_scope() as s:
        rows = s.scalars(select(Example)).all()
        cols = [c.key for c in Example.__table__.columns if c.key != "updated_at"]
        return {r.id: {c: getattr(r, c) for c in cols} for r in rows}


def ids(page: review.ReviewPage) -> list[int]:
    return [item["id"] for item in page.items]


# --- listing ----------------------------------------------------------------------------------------


def test_pages_in_id_order_with_total() -> None:
    made = [add(q=f"question {i}") for i in range(7)]
    first = review.list_examples("p", "d", limit=3)
    assert (ids(first), first.total, first.limit, first.offset) == (made[:3], 7, 3, 0)
    assert ids(review.list_examples("p", "d", limit=3, offset=6)) == made[6:]
    past_end = review.list_examples("p", "d", limit=3, offset=10)
    assert (past_end.items, past_end.total) == ([], 7)
    json.dumps(first.to_dict())  # JSON-friendly as it is


def test_item_fields() -> None:
    chat = add(
        messages=[SYS, *[{"role": r, "content": f"{r} {i}"} for i in (1, 2) for r in ("user", "assistant")]]
    )
    text = add(kind="text", text="Error E4 means the cover is open.", domain="printers", source="manual.pdf")
    items = {item["id"]: item for item in review.list_examples("p", "d").items}
    assert set(items[chat]) == {
        "id", "uid", "kind", "origin", "status", "split", "rating", "reason", "source", "domain", "edited",
        "question", "answer", "messages", "text",
    }  # fmt: skip
    assert (items[chat]["question"], items[chat]["answer"]) == ("user 1", "assistant 2")
    assert (items[chat]["origin"], items[chat]["status"], items[chat]["edited"]) == (
        "converter",
        "new",
        False,
    )
    assert items[text]["question"] is None and items[text]["answer"] is None
    assert (items[text]["text"], items[text]["domain"], items[text]["source"]) == (
        "Error E4 means the cover is open.",
        "printers",
        "manual.pdf",
    )


def test_filters() -> None:
    new = add()
    approved = add(status="approved", origin="llm", split="train", rating=5)
    rejected = add(status="rejected", reason="too short", rating=2, split="eval")
    deleted = add(status="deleted", origin="llm")

    def listed(**filters: Any) -> list[int]:
        return ids(review.list_examples("p", "d", **filters))

    assert listed() == [new, approved, rejected]  # deleted hidden by default
    assert listed(status="deleted") == [deleted]
    assert listed(status=["new", "rejected"]) == [new, rejected]
    assert listed(origin="llm") == [approved]
    assert listed(origin="llm", status=review.STATUSES) == [approved, deleted]
    assert listed(split="eval") == [rejected]
    assert listed(split="") == [new]
    assert listed(min_rating=2) == [approved, rejected]
    assert listed(min_rating=3) == [approved]
    assert review.list_examples("p", "d", status="approved").items[0]["rating"] == 5


def test_bad_filters_are_all_named_at_once() -> None:
    add()
    with pytest.raises(ValueError) as err:
        review.list_examples(
            "p", "d", status=["new", "live"], origin="human", min_rating=6, limit=0, offset=-1
        )
    message = str(err.value)
    for part in ("'live'", "'human'", "min_rating", "1 to 5", "limit", "offset"):
        assert part in message
    with pytest.raises(ValueError, match="no status"):
        review.list_examples("p", "d", status=[])


# --- search -----------------------------------------------------------------------------------------


def test_search_question_answer_and_text_case_insensitively() -> None:
    e4 = add(q="What does error E4 mean?", a="The cover is OPEN.")
    jam = add(q="How do I clear a paper jam?", a="Lift the rear flap.")
    text = add(kind="text", text="Toner Low means order a new cartridge.")
    system = add(messages=[{"role": "system", "content": "Mention the warranty."}, *_qa("Hi", "Hello")])

    def found(term: str) -> list[int]:
        return ids(review.list_examples("p", "d", search=term))

    assert found("error e4") == [e4]  # question
    assert found("cover is open") == [e4]  # answer, other case
    assert found("REAR FLAP") == [jam]
    assert found("toner low") == [text]  # text examples
    assert found("warranty") == [system]  # any turn counts
    assert found("paper jam") == [jam]
    assert found("nothing like this") == []


def test_search_ignores_json_keys_and_escapes_wildcards() -> None:
    pct = add(q="Is 100% coverage possible?", a='It says "ready_now".')
    plain = add(q="Is 1000 coverage possible?", a="It says ready now.")
    assert ids(review.list_examples("p", "d", search="role")) == []  # a key of every message
    assert ids(review.list_examples("p", "d", search="user")) == []  # a role, not content
    assert ids(review.list_examples("p", "d", search="100%")) == [pct]
    assert ids(review.list_examples("p", "d", search="_now")) == [pct]
    assert ids(review.list_examples("p", "d", search='"READY')) == [pct]
    assert ids(review.list_examples("p", "d", search="1000")) == [plain]


def test_search_non_ascii_and_with_filters_and_paging() -> None:
    accent = add(q="Que signifie l'ÉCRAN rouge ?", a="Le capot est ouvert.")
    hits = [add(q=f"error E{i}?", a="Restart it.", status="approved" if i % 2 else "new") for i in range(5)]
    assert ids(review.list_examples("p", "d", search="écran")) == [accent]
    page = review.list_examples("p", "d", search="RESTART", limit=2, offset=2)
    assert (ids(page), page.total) == (hits[2:4], 5)
    approved = review.list_examples("p", "d", search="restart", status="approved")
    assert (ids(approved), approved.total) == ([hits[1], hits[3]], 2)


def test_search_narrows_in_sql_before_python_confirms() -> None:
    # the LIKE over the serialised JSON must already drop non-matching rows (no full scan in Python)
    hit = add(q='Is "100%" ready_now?', a="Yes.")
    add(q="Is 1000 readyXnow?", a="No.")
    with session_scope() as s:
        for term in ('"100%', "READY_NOW", "yes."):
            assert s.scalars(select(Example.id).where(review._search_clause(term))).all() == [hit], term


# --- editing ----------------------------------------------------------------------------------------


def _qa(q: str, a: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def test_edit_validation_lists_every_problem() -> None:
    eid = add()
    bad: list[dict[str, Any]] = [
        {"role": "bot", "content": "hi"},
        {"role": "user", "content": "  "},
        {"role": "user", "x": 1},
    ]
    with pytest.raises(ValueError) as err:
        review.edit_example("p", "d", eid, messages=bad)
    message = str(err.value)
    for part in ("messages[0].role is 'bot'", "messages[1].content", "messages[2] has unknown keys ['x']"):
        assert part in message
    assert "messages[2].content" in message and "no assistant message" in message
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "nothing to edit"),
        ({"messages": []}, "non-empty list"),
        ({"messages": ["hi"]}, r"messages\[0\] must be an object"),
        ({"messages": [{"role": "assistant", "content": "a"}]}, "no user message"),
        ({"messages": _qa("q", "a"), "answer": "b"}, "not both"),
        ({"question": ""}, "question must be a non-empty string"),
        ({"text": "plain"}, "is a chat example"),
    ]
    for kwargs, problem in cases:
        with pytest.raises(ValueError, match=problem):
            review.edit_example("p", "d", eid, **kwargs)
    text_id = add(kind="text")
    with pytest.raises(ValueError, match="is a text example"):
        review.edit_example("p", "d", text_id, answer="x")
    with pytest.raises(ValueError, match="text must be a non-empty string"):
        review.edit_example("p", "d", text_id, text=" ")
    no_user = add(messages=[{"role": "assistant", "content": "a"}])
    with pytest.raises(ValueError, match="no user message to put the question in"):
        review.edit_example("p", "d", no_user, question="q")
    assert review.get_example("p", "d", eid)["edited"] is False  # nothing was written


def test_edit_question_and_answer_keeps_history() -> None:
    original = [SYS, *_qa("Q1", "A1"), *_qa("Q2", "A2")]
    eid = add(messages=original)
    before = datetime.now().astimezone()
    item = review.edit_example("p", "d", eid, question="What is E4?")
    assert (item["question"], item["answer"], item["edited"]) == ("What is E4?", "A2", True)
    review.edit_example("p", "d", eid, answer="Close the cover.")
    got = review.get_example("p", "d", eid)
    assert got["messages"] == [SYS, *_qa("What is E4?", "A1"), *_qa("Q2", "Close the cover.")]
    assert [h["messages"] for h in got["history"]] == [
        original,
        [SYS, *_qa("What is E4?", "A1"), *_qa("Q2", "A2")],
    ]
    stamp = datetime.fromisoformat(got["history"][0]["at"])
    assert stamp.utcoffset() == timedelta(0) and stamp >= before - timedelta(seconds=1)
    review.edit_example("p", "d", eid, answer="Close the cover.")  # no change: no new history entry
    assert len(review.get_example("p", "d", eid)["history"]) == 2


def test_edit_messages_and_text() -> None:
    eid = add()
    item = review.edit_example("p", "d", eid, messages=[SYS, *_qa("New question?", "New answer.")])
    assert (item["question"], item["answer"], item["messages"][0]) == ("New question?", "New answer.", SYS)
    tid = add(kind="text", text="old text")
    item = review.edit_example("p", "d", tid, text="new text")
    assert (item["text"], item["edited"]) == ("new text", True)
    assert review.get_example("p", "d", tid)["history"][0]["text"] == "old text"


def test_edited_rejected_example_returns_to_new_and_approved_stays() -> None:
    rejected = add(status="rejected", reason="answer too short")
    approved = add(status="approved")
    item = review.edit_example("p", "d", rejected, answer="A longer, complete answer.")
    assert (item["status"], item["reason"]) == ("new", None)
    assert review.get_example("p", "d", rejected)["history"][0]["status"] == "rejected"
    assert review.edit_example("p", "d", approved, answer="Better.")["status"] == "approved"


def test_deleted_example_cannot_be_edited() -> None:
    eid = add(status="deleted")
    with pytest.raises(ValueError, match="restore it"):
        review.edit_example("p", "d", eid, answer="x")


# --- delete, restore, approve, rate ------------------------------------------------------------------


def test_soft_delete_and_restore() -> None:
    eid = add(rating=4)
    before = review.get_example("p", "d", eid)
    assert review.delete_example("p", "d", eid)["status"] == "deleted"
    assert eid not in ids(review.list_examples("p", "d"))
    assert ids(review.list_examples("p", "d", status="deleted")) == [eid]
    gone = review.get_example("p", "d", eid)
    assert {k: v for k, v in gone.items() if k != "status"} == {
        k: v for k, v in before.items() if k != "status"
    }
    assert review.restore_example("p", "d", eid)["status"] == "new"
    assert review.get_example("p", "d", eid) == before


def test_restore_rejected_clears_reason_and_leaves_live_ones() -> None:
    rejected = add(status="rejected", reason="duplicate")
    approved = add(status="approved")
    assert review.restore_example("p", "d", rejected)["reason"] is None
    assert review.get_example("p", "d", rejected)["status"] == "new"
    assert review.restore_example("p", "d", approved)["status"] == "approved"


def test_approve() -> None:
    eid = add()
    rejected = add(status="rejected", reason="filter said no")
    assert review.approve_example("p", "d", eid)["status"] == "approved"
    item = review.approve_example("p", "d", rejected)
    assert (item["status"], item["reason"]) == ("approved", None)


def test_approve_deleted_is_refused() -> None:
    eid = add(status="deleted")
    with pytest.raises(ValueError, match=rf"deleted examples \[{eid}\]; restore them first"):
        review.approve_example("p", "d", eid)
    assert review.get_example("p", "d", eid)["status"] == "deleted"


def test_approve_many_is_all_or_nothing() -> None:
    a, b = add(), add()
    deleted = add(status="deleted")
    with pytest.raises(ValueError, match=str(deleted)):
        review.approve_examples("p", "d", [a, b, deleted])
    with pytest.raises(LookupError, match=r"no examples \[9999\]"):
        review.approve_examples("p", "d", [a, 9999])
    assert review.review_counts("p", "d")["approved"] == 0
    assert review.approve_examples("p", "d", [a, b, a]) == 2
    assert ids(review.list_examples("p", "d", status="approved")) == [a, b]


def test_rating_range_and_clear() -> None:
    eid = add()
    for rating in (1, 5):
        assert review.rate_example("p", "d", eid, rating)["rating"] == rating
    for bad in (0, 6, -1, True):
        with pytest.raises(ValueError, match="rating must be an integer from 1 to 5"):
            review.rate_example("p", "d", eid, bad)
    assert review.get_example("p", "d", eid)["rating"] == 5
    assert review.rate_example("p", "d", eid, None)["rating"] is None


def test_counts() -> None:
    add(rating=3)
    add(status="approved", edited=True)
    add(status="approved", rating=5)
    add(status="rejected", reason="short")
    add(status="deleted", rating=1, edited=True)  # not counted as rated or edited
    assert review.review_counts("p", "d") == {
        "new": 1,
        "approved": 2,
        "rejected": 1,
        "deleted": 1,
        "rated": 2,
        "edited": 1,
    }
    add(dataset="only-new")
    assert review.review_counts("p", "only-new") == {
        "new": 1, "approved": 0, "rejected": 0, "deleted": 0, "rated": 0, "edited": 0
    }  # fmt: skip


# --- lookups and isolation ------------------------------------------------------------------------


def test_lookup_errors_name_what_is_missing() -> None:
    eid = add("p", "d")
    add("p", "other")
    with pytest.raises(LookupError, match=r"no project 'nope' \(known: p\)"):
        review.list_examples("nope", "d")
    with pytest.raises(LookupError, match=r"no dataset 'x' in project 'p' \(known: d, other\)"):
        review.review_counts("p", "x")
    with pytest.raises(LookupError, match=r"no example 9999 in dataset 'd' of project 'p'"):
        review.get_example("p", "d", 9999)
    with pytest.raises(LookupError, match=f"no example {eid} in dataset 'other'"):
        review.get_example("p", "other", eid)


MUTATIONS: list[tuple[str, Callable[[str, str, int], Any]]] = [
    ("edit", lambda p, d, i: review.edit_example(p, d, i, answer="Changed.")),
    ("delete", review.delete_example),
    ("restore", review.restore_example),
    ("approve", review.approve_example),
    ("approve_many", lambda p, d, i: review.approve_examples(p, d, [i])),
    ("rate", lambda p, d, i: review.rate_example(p, d, i, 4)),
]


@pytest.mark.parametrize("name,mutate", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_other_datasets_and_projects_are_never_touched(
    name: str, mutate: Callable[[str, str, int], Any]
) -> None:
    mine = add("p", "d", status="rejected", reason="r")
    others = [add("p", "other", status="rejected", reason="r"), add("q", "d", status="rejected", reason="r")]
    before = snapshot()
    mutate("p", "d", mine)
    after = snapshot()
    assert after[mine] != before[mine]
    assert {i: after[i] for i in others} == {i: before[i] for i in others}
    # an id from another dataset or project is unknown here, even though the row exists
    for project, dataset in (("p", "other"), ("q", "d")):
        with pytest.raises(LookupError):
            mutate(project, dataset, mine)
    assert snapshot() == after
