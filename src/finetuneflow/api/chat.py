"""Chat with a base model or a run's tuned model: multi-turn, streamed, with memories in the prompt,
and every exchange logged with what the person made of it (rating, correction).

:func:`open_chat` loads the model and returns a :class:`ChatSession`; ``ftf chat``'s REPL, the
one-shot :func:`chat` and later the server and the web app all drive that same object. Memory goes
through one port (:mod:`finetuneflow.api.memory_port`); chat works the same without it.

Raises (every function here): ``LookupError`` for an unknown project, run or exchange, or nothing
asked yet; ``ValueError`` for bad input (``ConfigError`` for settings); ``MemoryUnavailable`` for a
memory command in a chat without memory.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from finetuneflow.api.memory_port import MemoryPort, MemoryUnavailable, memory_port
from finetuneflow.api.runs import latest_run, require_kind, run_dir
from finetuneflow.config import section, setting, to_dict
from finetuneflow.errors import ConfigError
from finetuneflow.models.context import Fitted, fit_prompt
from finetuneflow.models.generate import Sampling
from finetuneflow.records import Message
from finetuneflow.state import runs as rf
from finetuneflow.state import schema, session_scope
from finetuneflow.state.repo import get_or_create_project

CORRECTION_IMPORTANCE = 0.95  # a correction outranks what it corrects (memory's defaults: 0.9-1.0)
SOURCE_KEYS = ("id", "text", "kind", "source", "score", "importance")  # what an exchange logs of a memory


@dataclass
class ChatSettings:
    """How a chat answers: sampling, system prompt, memories and the context budget."""

    sampling: Sampling = section(Sampling, "How the answer's tokens are picked.")
    system: str = setting("", "System prompt ('' = none: the model's template default).")
    memories: int = setting(5, "Memories retrieved per question and offered to the model (0 = none).")
    memory_share: float = setting(
        0.5, "Share of the prompt's free room memories may fill; turns get the rest."
    )
    context_tokens: int = setting(0, "Prompt + answer budget in tokens (0 = the model's context window).")
    device: str = setting("auto", "Where the model runs: auto, cpu, cuda or mps.")

    def problems(self) -> list[str]:
        out = [f"sampling.{p}" for p in self.sampling.problems()]
        if self.memories < 0:
            out.append("memories: must be >= 0")
        if not 0 <= self.memory_share <= 1:
            out.append("memory_share: must be in [0, 1]")
        if self.context_tokens < 0:
            out.append("context_tokens: must be >= 0 (0 = the model's window)")
        return out


@dataclass
class ChatModel:
    """A loaded model to chat with: a run's tuned model (``run_id``) or a base model (``run_id`` None)."""

    model: Any
    tokenizer: Any
    name: str  # the run id, or the base model as named
    run_id: str | None


@dataclass
class Turn:
    """One answered question of a session."""

    exchange_id: int  # its row in chat_exchanges
    question: str
    answer: str
    sources: list[dict[str, Any]]  # the memories in the prompt, best first
    prompt: list[Message]  # what the model read (system with memories, kept turns, question)
    prompt_tokens: int
    dropped_turns: int  # earlier turns left out to fit the budget
    rating: int | None = None
    correction: str | None = None

    @property
    def final(self) -> str:
        """The answer as it stands: the correction when there is one."""
        return self.correction or self.answer


def load_chat_model(
    project: str, run_id: str | None = None, base: str | None = None, device: str = "auto"
) -> ChatModel:
    """The tuned model of run ``run_id`` (default: the newest finished causal run), or the base
    model ``base`` (a name or path ``resolve_model`` accepts)."""
    from finetuneflow.hardware import pick_device
    from finetuneflow.models.load import load_causal_lm, load_tokenizer, load_tuned

    if run_id and base:
        raise ValueError("chat with a run (--run) or a base model (--base), not both")
    where = pick_device(device)
    if base:
        from finetuneflow.models.resolve import resolve_model

        folder = resolve_model(base)
        return ChatModel(load_causal_lm(folder, where).eval(), load_tokenizer(folder), base, None)
    try:
        run_id = run_id or latest_run(project)
    except LookupError as err:
        raise LookupError(f"{err}, or chat with a base model: --base smollm2-135m-instruct") from err
    folder = run_dir(project, run_id)
    require_kind(folder, rf.CAUSAL, "chat with")
    tuned = load_tuned(folder, where)
    return ChatModel(tuned.model, tuned.tokenizer, run_id, run_id)


class ChatSession:
    """A conversation with one model: the turns so far (trimmed to the context budget when asked,
    oldest first), memories recalled per question, and each exchange logged as it is answered."""

    def __init__(
        self, project: str, model: ChatModel, memory: MemoryPort, settings: ChatSettings | None = None
    ) -> None:
        from finetuneflow.models.generate import context_window

        self.project = project
        self.model = model
        self.memory = memory
        self.settings = settings or ChatSettings()
        if problems := self.settings.problems():
            raise ConfigError(problems, "chat settings")
        window = self.settings.context_tokens or context_window(model.model, model.tokenizer)
        self.budget = window - self.settings.sampling.max_new_tokens  # what the prompt may take
        if self.budget < 16:
            raise ValueError(
                f"max_new_tokens ({self.settings.sampling.max_new_tokens}) leaves {self.budget} of the "
                f"{window}-token context for the prompt; lower it"
            )
        with session_scope() as s:
            self.project_id = get_or_create_project(s, project).id
        self.session_id = uuid.uuid4().hex[:12]
        self.turns: list[Turn] = []

    @property
    def last(self) -> Turn:
        """The latest turn. Raises LookupError before the first question."""
        if not self.turns:
            raise LookupError("nothing asked yet in this chat: ask a question first")
        return self.turns[-1]

    def ask(self, question: str, on_text: Callable[[str], None] | None = None) -> Turn:
        """Answer ``question`` in the context of the earlier turns, with recalled memories. With
        ``on_text``, the answer is streamed to it piece by piece as it is generated."""
        from finetuneflow.models.generate import count_prompt_tokens

        question = question.strip()
        if not question:
            raise ValueError("an empty question; type one, or /help")
        count = partial(count_prompt_tokens, self.model.tokenizer)
        earlier = [(t.question, t.final) for t in self.turns]
        notes = self._recall(question)
        system = self.settings.system or None
        fitted = fit_prompt(count, self.budget, question, earlier, notes, system, self.settings.memory_share)
        start = time.monotonic()
        answer = self._generate(fitted.messages, on_text)
        exchange_id = self._log(question, answer, fitted, time.monotonic() - start)
        turn = Turn(
            exchange_id, question, answer, fitted.notes, fitted.messages, fitted.tokens, fitted.dropped_turns
        )
        self.turns.append(turn)
        return turn

    def _recall(self, question: str) -> list[dict[str, Any]]:
        if self.settings.memories == 0:
            return []
        try:
            return self.memory.recall(question, k=self.settings.memories)
        except MemoryUnavailable:
            return []

    def _generate(self, messages: list[Message], on_text: Callable[[str], None] | None) -> str:
        from finetuneflow.models.generate import generate_reply, stream_reply

        m, tok, sampling = self.model.model, self.model.tokenizer, self.settings.sampling
        if on_text is None:
            return generate_reply(m, tok, messages, sampling)
        pieces: list[str] = []
        for piece in stream_reply(m, tok, messages, sampling):
            shown = piece if "".join(pieces).strip() else piece.lstrip()  # no blank lines before the answer
            pieces.append(piece)
            if shown:
                on_text(shown)
        return "".join(pieces).strip()

    def _log(self, question: str, answer: str, fitted: Fitted, seconds: float) -> int:
        completion = len(self.model.tokenizer(answer, add_special_tokens=False)["input_ids"])
        row = schema.ChatExchange(
            project_id=self.project_id,
            session=self.session_id,
            turn=len(self.turns),
            model=self.model.name,
            run_id=self.model.run_id,
            system=self.settings.system or None,
            history=fitted.history,
            question=question,
            answer=answer,
            retrieved=[{k: n[k] for k in SOURCE_KEYS if k in n} for n in fitted.notes],
            retrieved_ids=[n["id"] for n in fitted.notes if n.get("id") is not None],
            sampling=to_dict(self.settings.sampling),
            prompt_tokens=fitted.tokens,
            completion_tokens=completion,
            seconds=round(seconds, 3),
        )
        with session_scope() as s:
            project = s.get(schema.Project, self.project_id)
            if project is None or project.name != self.project:  # deleted, its id maybe given again
                raise LookupError(
                    f"project {self.project!r} was deleted while this chat was open; nothing logged"
                )
            s.add(row)
            s.flush()
            return row.id

    def _update(self, exchange_id: int, **values: Any) -> None:
        with session_scope() as s:
            row = s.get(schema.ChatExchange, exchange_id)
            if row is None:
                raise LookupError(f"no chat exchange {exchange_id}")
            for key, value in values.items():
                setattr(row, key, value)

    # --- what the person does with an answer ---------------------------------------------------

    def rate(self, rating: int) -> dict[str, Any]:
        """Rate the last answer 1-5 (``ftf dataset from-chats`` keeps the well-rated ones)."""
        if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
            raise ValueError(f"a rating is a whole number from 1 to 5, not {rating!r}")
        turn = self.last
        self._update(turn.exchange_id, rating=rating)
        turn.rating = rating
        return {"exchange": turn.exchange_id, "rating": rating}

    def correct(self, new_text: str, target: str | None = None) -> dict[str, Any]:
        """Without ``target``: ``new_text`` is the right answer to the last question. The exchange
        records it (it becomes training data), later turns see it instead of the wrong answer, and
        the memory gets a correction item. With ``target`` (a memory item id): correct that item."""
        new_text = new_text.strip()
        if not new_text:
            raise ValueError("say what is right: /correct NEW (or /correct ID NEW for a memory item)")
        if target is not None:
            return {"memory": self.memory.correct(target, new_text)}
        turn = self.last
        self._update(turn.exchange_id, correction=new_text)
        turn.correction = new_text
        out: dict[str, Any] = {"exchange": turn.exchange_id, "correction": new_text}
        try:
            out["memory"] = self._correction_item(turn)
        except MemoryUnavailable as err:
            out["memory"] = str(err)
        return out

    def _correction_item(self, turn: Turn) -> dict[str, Any]:
        """The corrected exchange as a memory correction: of what the question recalls, or, when the
        memory finds nothing to correct, a new item with a correction's importance."""
        text = f"Q: {turn.question}\nA: {turn.final}"
        try:
            return self.memory.correct(turn.question, text)
        except LookupError:
            source = f"chat exchange {turn.exchange_id}"
            return self.memory.teach(text, CORRECTION_IMPORTANCE, ("correction",), source)

    def remember(self) -> dict[str, Any]:
        """Keep the last exchange (as corrected, with its rating) as a memory item."""
        turn = self.last
        ids = [n.get("id") for n in turn.sources]
        return self.memory.remember_exchange(turn.question, turn.final, ids, rating=turn.rating)

    def teach(self, text: str) -> dict[str, Any]:
        """Teach the memory a fact."""
        if not text.strip():
            raise ValueError("teach what? /teach TEXT")
        return self.memory.teach(text.strip(), source=f"chat {self.session_id}")

    def forget(self, item: str) -> Any:
        """Forget memory item ``item``."""
        if not item.strip():
            raise ValueError("forget which item? /forget ID (see /sources)")
        return self.memory.forget(item.strip())

    def sources(self) -> list[dict[str, Any]]:
        """The memories the last answer was given."""
        return self.last.sources

    def status(self) -> dict[str, Any]:
        """The model, this session, the context budget and the memory's own status."""
        try:
            memory: Any = self.memory.status()
        except MemoryUnavailable as err:
            memory = str(err)
        return {
            "model": self.model.name,
            "run": self.model.run_id,
            "session": self.session_id,
            "turns": len(self.turns),
            "prompt_budget": self.budget,
            "sampling": to_dict(self.settings.sampling),
            "memory": memory,
        }

    def reset(self) -> None:
        """Forget the turns (not the memory, not the log): the next question starts a new session."""
        self.turns = []
        self.session_id = uuid.uuid4().hex[:12]


def open_chat(
    project: str,
    run_id: str | None = None,
    *,
    base: str | None = None,
    memory: bool = True,
    settings: ChatSettings | None = None,
    port: MemoryPort | None = None,
) -> ChatSession:
    """A chat with run ``run_id``'s tuned model (default: the newest) or the base model ``base``;
    with the project's memory unless ``memory`` is False (``port`` replaces the memory itself)."""
    cfg = settings or ChatSettings()
    if problems := cfg.problems():
        raise ConfigError(problems, "chat settings")
    model = load_chat_model(project, run_id, base, cfg.device)
    return ChatSession(project, model, port or memory_port(project, memory), cfg)


def chat(
    project: str,
    question: str,
    run_id: str | None = None,
    settings: ChatSettings | None = None,
    *,
    base: str | None = None,
    memory: bool = True,
) -> str:
    """Answer one question with a run's tuned model (default: the newest) or a base model; the
    exchange is logged like any other (greedy unless ``settings`` say otherwise)."""
    return open_chat(project, run_id, base=base, memory=memory, settings=settings).ask(question).answer


def exchange_log(project: str, session: str | None = None) -> list[dict[str, Any]]:
    """The logged exchanges of a project (of one session), oldest first, as plain dicts."""
    from sqlalchemy import select

    from finetuneflow.api._common import jsonable, project_id

    pid = project_id(project)
    with session_scope() as s:
        query = select(schema.ChatExchange).where(schema.ChatExchange.project_id == pid)
        if session is not None:
            query = query.where(schema.ChatExchange.session == session)
        rows = s.scalars(query.order_by(schema.ChatExchange.id)).all()
        cols = [c.name for c in schema.ChatExchange.__table__.columns]
        return [jsonable({c: getattr(r, c) for c in cols}) for r in rows]
