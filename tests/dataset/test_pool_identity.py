"""One content, one pool row: the converters and the pool name an example by the same content hash,
so a generated pair that equals a Q&A row (or a chat answer equal to a converted one) is not a second
row, and a rebuild does not trip the pool's unique (dataset, uid) constraint."""

from __future__ import annotations

from sqlalchemy import select

from finetuneflow.dataset.convert import ConvertedExample, content_uid
from finetuneflow.dataset.pool import NewExample, add_examples, sync_converted, uid_of
from finetuneflow.records import Message
from finetuneflow.state.db import session_scope
from finetuneflow.state.repo import get_or_create_project
from finetuneflow.state.schema import Example


def _qa(q: str, a: str) -> list[Message]:
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def test_pool_and_converters_hash_non_ascii_content_alike() -> None:
    messages = _qa("Que signifie l'erreur E21 ?", "La plaque chauffante a dépassé 65 °C.")
    assert uid_of(messages) == content_uid("chat", messages)
    assert uid_of(None, "Größe: 5 µm") == content_uid("text", "Größe: 5 µm")
    other = _qa("Que signifie l'erreur E22 ?", "La plaque chauffante a dépassé 65 °C.")
    assert uid_of(messages) != uid_of(other)


def _rows() -> list[tuple[str, str]]:
    with session_scope() as s:
        return [(r.origin, r.uid) for r in s.scalars(select(Example).order_by(Example.id))]


def test_a_qa_row_equal_to_a_generated_pair_is_one_row() -> None:
    messages = _qa("Qu'est-ce que E21 ?", "Le coupe-circuit de sécurité a sauté.")
    with session_scope() as s:
        pid = get_or_create_project(s, "p").id
        assert add_examples(s, pid, "d", [NewExample(messages, "llm", "manual.md")]) == (1, 0)
    converted = ConvertedExample(content_uid("chat", messages), "chat", "faq.csv", messages=messages, meta={})
    for _ in range(2):  # the second build finds everything in place
        with session_scope() as s:
            sync_converted(s, pid, "d", [converted])
    assert _rows() == [("llm", uid_of(messages))]
    other = _qa("Et E22 ?", "Le capteur de température est débranché.")
    with session_scope() as s:
        extra = ConvertedExample(content_uid("chat", other), "chat", "faq.csv", messages=other, meta={})
        sync_converted(s, pid, "d", [converted, extra])
    assert _rows() == [("llm", uid_of(messages)), ("converter", uid_of(other))]
