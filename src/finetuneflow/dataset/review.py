"""Review of a dataset's example pool: list, search, edit, rate, approve, delete and restore.

The core that ``ftf dataset review``, the REST API and the web wizard wrap: every function takes a
project and a dataset name, opens its own session and returns JSON-friendly values. Nothing is lost:
a delete sets ``status='deleted'`` and an edit keeps the previous version in ``meta['history']``.
Which rows a build keeps (by status and rating) is decided in one place:
:func:`finetuneflow.dataset.pool.drop_reason`.

Errors: ``LookupError`` for an unknown project, dataset or example id; ``ValueError`` for bad input.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import ColumnElement, Text, cast, func, or_, select, true
from sqlalchemy.orm import Session

from finetuneflow.dataset.pool import LIVE
from finetuneflow.state import repo
from finetuneflow.state.db import session_scope
from finetuneflow.state.schema import Example, utcnow

STATUSES = ("new", "approved", "rejected", "deleted")
ORIGINS = ("converter", "llm", "chat")
ROLES = ("system", "user", "assistant")
MAX_LIMIT = 1000
# the columns an item shows as they are; question and answer are derived from messages
_FIELDS = "id uid kind origin status split rating reason source domain edited messages text".split()


@dataclass(frozen=True)
class ReviewPage:
    """One page of :func:`list_examples`."""

    items: list[dict[str, Any]]  # one dict per example, as :func:`get_example` without history
    total: int  # rows matching the filters over all pages
    limit: int
    offset: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- reading --------------------------------------------------------------------------------------


def list_examples(
    project: str,
    dataset: str,
    *,
    status: str | Sequence[str] | None = None,
    origin: str | None = None,
    split: str | None = None,
    min_rating: int | None = None,
    search: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> ReviewPage:
    """A page of examples in id order, with the total that match.

    ``status``: one or several (default all but ``deleted``); ``min_rating``: rated ``>= min_rating``
    (a listing filter: it hides unrated rows, which a build with the same minimum keeps);
    ``search``: case-insensitive substring of any message content (question, answer, other turns) or text.

    Raises:
        LookupError: unknown project or dataset.
        ValueError: every bad filter at once (unknown status or origin, rating outside 1..5, paging).
    """
    statuses = _check_filters(status, origin, min_rating, limit, offset)
    with session_scope() as session:
        conds = [*_scope(session, project, dataset), Example.status.in_(statuses)]
        if origin is not None:
            conds.append(Example.origin == origin)
        if split is not None:
            conds.append(Example.split == split)
        if min_rating is not None:
            conds.append(Example.rating >= min_rating)
        if not search:
            total = session.scalar(select(func.count()).select_from(Example).where(*conds)) or 0
            query = select(Example).where(*conds).order_by(Example.id).limit(limit).offset(offset)
            return ReviewPage([_view(r) for r in session.scalars(query)], total, limit, offset)
        # SQL narrows to candidates; Python confirms (the LIKE also sees JSON keys and roles)
        conds.append(_search_clause(search))
        candidates = session.execute(select(Example.id, Example.messages, Example.text).where(*conds))
        ids = sorted(i for i, msgs, text in candidates if _matches(search.casefold(), msgs, text))
        page = ids[offset : offset + limit]
        rows = {r.id: r for r in session.scalars(select(Example).where(Example.id.in_(page)))}
        return ReviewPage([_view(rows[i]) for i in page], len(ids), limit, offset)


def get_example(project: str, dataset: str, example_id: int) -> dict[str, Any]:
    """One example, with its edit ``history`` (oldest first). Raises LookupError for an unknown id."""
    with session_scope() as session:
        row = _row(session, project, dataset, example_id)
        return {**_view(row), "history": list(row.meta.get("history", []))}


def review_counts(project: str, dataset: str) -> dict[str, int]:
    """Rows per status (each status present, 0 if none), plus ``rated`` and ``edited`` among the rows
    that are not deleted. Raises LookupError for an unknown project or dataset."""
    with session_scope() as session:
        scope = _scope(session, project, dataset)
        query = select(Example.status, func.count()).where(*scope).group_by(Example.status)
        counts = dict.fromkeys(STATUSES, 0) | {s: n for s, n in session.execute(query)}
        kept = select(func.count()).select_from(Example).where(*scope, Example.status != "deleted")
        counts["rated"] = session.scalar(kept.where(Example.rating.is_not(None))) or 0
        counts["edited"] = session.scalar(kept.where(Example.edited.is_(True))) or 0
        return counts


# --- changing -------------------------------------------------------------------------------------


def edit_example(
    project: str,
    dataset: str,
    example_id: int,
    *,
    messages: list[dict[str, Any]] | None = None,
    question: str | None = None,
    answer: str | None = None,
    text: str | None = None,
) -> dict[str, Any]:
    """Replace a chat's ``messages``, or its first user turn (``question``) and/or last assistant turn
    (``answer``), or a text example's ``text``.

    The previous version goes to ``meta['history']`` with a UTC timestamp and ``edited`` is set; a
    rejected example goes back to ``new`` with its reason cleared. An edit that changes nothing is a no-op.

    Raises:
        LookupError: unknown project, dataset or example id.
        ValueError: every problem with the input at once; a deleted example (restore it first).
    """
    with session_scope() as session:
        row = _row(session, project, dataset, example_id)
        if row.status == "deleted":
            raise ValueError(f"example {example_id} is deleted; restore it before editing")
        new_messages, new_text = _edited_content(row, messages, question, answer, text)
        if new_messages == row.messages and new_text == row.text:
            return _view(row)
        entry = {"at": utcnow().isoformat(), "messages": row.messages, "text": row.text, "status": row.status}
        # a new dict, so SQLAlchemy sees the JSON column change
        row.meta = {**row.meta, "history": [*row.meta.get("history", []), entry]}
        row.messages, row.text, row.edited = new_messages, new_text, True
        if row.status == "rejected":
            row.status, row.reason = "new", None
        session.flush()
        return _view(row)


def delete_example(project: str, dataset: str, example_id: int) -> dict[str, Any]:
    """Soft delete (``status='deleted'``): content, rating and history stay; see :func:`restore_example`."""
    return _update(project, dataset, example_id, status="deleted")


def restore_example(project: str, dataset: str, example_id: int) -> dict[str, Any]:
    """Put a deleted or rejected example back to ``new`` (reason cleared); a live one is left as it is."""
    with session_scope() as session:
        row = _row(session, project, dataset, example_id)
        if row.status not in LIVE:
            row.status, row.reason = "new", None
            session.flush()
        return _view(row)


def approve_example(project: str, dataset: str, example_id: int) -> dict[str, Any]:
    """Approve one example (a rejected one too: the reviewer overrides the filter); see
    :func:`approve_examples` for the errors."""
    approve_examples(project, dataset, [example_id])
    return get_example(project, dataset, example_id)


def approve_examples(project: str, dataset: str, ids: Iterable[int]) -> int:
    """Approve several examples, all or none; returns how many.

    Raises:
        LookupError: unknown project or dataset, or ids not in this dataset (all listed).
        ValueError: some are deleted (all listed; restore them first).
    """
    wanted = set(ids)
    with session_scope() as session:
        query = select(Example).where(*_scope(session, project, dataset), Example.id.in_(wanted))
        rows = session.scalars(query).all()
        missing = sorted(wanted - {r.id for r in rows})
        if missing:
            raise LookupError(f"no examples {missing} in dataset {dataset!r} of project {project!r}")
        deleted = sorted(r.id for r in rows if r.status == "deleted")
        if deleted:
            raise ValueError(f"cannot approve deleted examples {deleted}; restore them first")
        for row in rows:
            row.status, row.reason = "approved", None
        return len(rows)


def rate_example(project: str, dataset: str, example_id: int, rating: int | None) -> dict[str, Any]:
    """Set the user rating, 1 to 5, or clear it with ``None`` (ValueError outside 1..5)."""
    if rating is not None:
        _check_rating(rating, "rating")
    return _update(project, dataset, example_id, rating=rating)


def message_problems(messages: Any) -> list[str]:
    """Everything wrong with a chat, empty when valid: a list of ``{role, content}``, roles system, user
    or assistant, non-empty content, at least one user and one assistant message."""
    if not isinstance(messages, list) or not messages:
        return ["messages must be a non-empty list of {role, content}"]
    problems: list[str] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            problems.append(f"messages[{i}] must be an object with role and content")
            continue
        if extra := sorted(set(m) - {"role", "content"}):
            problems.append(f"messages[{i}] has unknown keys {extra} (only role and content)")
        if m.get("role") not in ROLES:
            problems.append(f"messages[{i}].role is {m.get('role')!r} (use {', '.join(ROLES)})")
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            problems.append(f"messages[{i}].content must be a non-empty string")
    roles = {m.get("role") for m in messages if isinstance(m, dict)}
    return problems + [f"no {r} message" for r in ("user", "assistant") if r not in roles]


# --- helpers --------------------------------------------------------------------------------------


def _view(row: Example) -> dict[str, Any]:
    msgs = row.messages or []
    question = next((m.get("content") for m in msgs if m.get("role") == "user"), None)
    answer = next((m.get("content") for m in reversed(msgs) if m.get("role") == "assistant"), None)
    return {**{f: getattr(row, f) for f in _FIELDS}, "question": question, "answer": answer}


def _scope(session: Session, project: str, dataset: str) -> tuple[ColumnElement[bool], ...]:
    """The conditions selecting this dataset's rows, once the project and the dataset are known to exist."""
    pid = repo.find_project(session, project).id
    scope = (Example.project_id == pid, Example.dataset == dataset)
    if session.scalar(select(Example.id).where(*scope).limit(1)) is not None:
        return scope
    known = sorted(session.scalars(select(Example.dataset).where(Example.project_id == pid).distinct()))
    raise LookupError(
        f"no dataset {dataset!r} in project {project!r} (known: {', '.join(known) or 'none yet'})"
    )


def _row(session: Session, project: str, dataset: str, example_id: int) -> Example:
    query = select(Example).where(*_scope(session, project, dataset), Example.id == example_id)
    row = session.scalar(query)
    if row is None:
        raise LookupError(f"no example {example_id} in dataset {dataset!r} of project {project!r}")
    return row


def _update(project: str, dataset: str, example_id: int, **values: Any) -> dict[str, Any]:
    with session_scope() as session:
        row = _row(session, project, dataset, example_id)
        for key, value in values.items():
            setattr(row, key, value)
        session.flush()
        return _view(row)


def _check_rating(value: int, name: str) -> None:
    if not _valid_rating(value):
        raise ValueError(f"{name} must be an integer from 1 to 5, got {value!r}")


def _check_filters(
    status: str | Sequence[str] | None, origin: str | None, min_rating: int | None, limit: int, offset: int
) -> list[str]:
    """The statuses to list; raises ValueError naming every bad filter."""
    default = [s for s in STATUSES if s != "deleted"]
    statuses = default if status is None else [status] if isinstance(status, str) else list(status)
    problems = [f"unknown status {s!r} (use {', '.join(STATUSES)})" for s in statuses if s not in STATUSES]
    if not statuses:
        problems.append(f"no status given (use one or more of {', '.join(STATUSES)})")
    if origin is not None and origin not in ORIGINS:
        problems.append(f"unknown origin {origin!r} (use {', '.join(ORIGINS)})")
    if min_rating is not None and not _valid_rating(min_rating):
        problems.append(f"min_rating must be an integer from 1 to 5, got {min_rating!r}")
    if not 1 <= limit <= MAX_LIMIT:
        problems.append(f"limit must be from 1 to {MAX_LIMIT}, got {limit}")
    if offset < 0:
        problems.append(f"offset must be 0 or more, got {offset}")
    if problems:
        raise ValueError("; ".join(problems))
    return statuses


def _valid_rating(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 5


def _search_clause(search: str) -> ColumnElement[bool]:
    """SQL keeping a superset of what :func:`_matches` keeps: a LIKE over the serialised JSON (portable
    across SQLite and PostgreSQL). SQLite's lower() folds ASCII only and JSON may escape non-ASCII as
    ``\\uXXXX``, so a non-ASCII term is left to Python alone."""
    if not search.isascii():
        return true()
    term = search.lower()

    def like(s: str) -> str:
        return "%" + s.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"

    return or_(
        # inside the JSON text quotes and backslashes are escaped, so match the term as JSON writes it
        func.lower(cast(Example.messages, Text)).like(like(json.dumps(term)[1:-1]), escape="!"),
        func.lower(Example.text).like(like(term), escape="!"),
    )


def _matches(needle: str, messages: list[Any] | None, text: str | None) -> bool:
    contents = [str(m.get("content", "")) for m in messages or [] if isinstance(m, dict)]
    return any(needle in s.casefold() for s in [*contents, text or ""])


def _edited_content(
    row: Example, messages: list[Any] | None, question: str | None, answer: str | None, text: str | None
) -> tuple[list[Any] | None, str | None]:
    """The new ``(messages, text)``; raises ValueError listing every problem."""
    chat_edit = messages is not None or question is not None or answer is not None
    problems = (
        [] if chat_edit or text is not None else ["nothing to edit: give messages, question, answer or text"]
    )
    if messages is not None and (question is not None or answer is not None):
        problems.append("give either messages or question/answer, not both")
    if row.kind == "text" and chat_edit:
        problems.append(f"example {row.id} is a text example: edit its text")
    if row.kind != "text" and text is not None:
        problems.append(f"example {row.id} is a {row.kind} example: edit its messages, question or answer")
    if row.kind == "text" and text is not None and (not isinstance(text, str) or not text.strip()):
        problems.append("text must be a non-empty string")
    if not problems and messages is not None:
        problems = message_problems(messages)
    if problems:
        raise ValueError("invalid edit: " + "; ".join(problems))
    if row.kind == "text":
        return row.messages, text
    if messages is not None:
        return [dict(m) for m in messages], row.text
    return _replace_turns(row.messages or [], question, answer), row.text


def _replace_turns(messages: list[Any], question: str | None, answer: str | None) -> list[Any]:
    """A copy with the first user content set to ``question`` and the last assistant content to ``answer``."""
    new = [dict(m) for m in messages]
    problems: list[str] = []
    for name, role, value, turns in (
        ("question", "user", question, new),
        ("answer", "assistant", answer, new[::-1]),
    ):
        target = next((m for m in turns if m.get("role") == role), None)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{name} must be a non-empty string")
        elif target is None:
            problems.append(f"no {role} message to put the {name} in")
        else:
            target["content"] = value
    if problems:
        raise ValueError("invalid edit: " + "; ".join(problems))
    return new
