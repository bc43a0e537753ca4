"""The core of ``ftf chat``'s interactive mode: lines in, text out, over a :class:`ChatSession`.

It needs no terminal: ``ftf chat`` feeds it what ``input()`` reads and prints to the console; tests
feed it a list of lines and collect what it writes. A line is a question, or a ``/command``; every
command is a method of the session, so this module only parses and prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from finetuneflow.api.memory_port import MemoryUnavailable, NoMemory

if TYPE_CHECKING:
    from finetuneflow.api.chat import ChatSession


class Sink(Protocol):
    """Where the REPL writes."""

    def stream(self, piece: str) -> None:
        """A piece of an answer as it is generated (no newline added)."""

    def line(self, text: str = "") -> None:
        """A whole line."""


Handler = Callable[["ChatSession", str, Sink], None]
QUIT = ("quit", "exit", "q")


def run_repl(session: ChatSession, lines: Iterable[str], out: Sink) -> int:
    """Answer questions and run commands from ``lines`` until they end or ``/quit``; returns the
    number of questions answered. Errors are printed and the chat goes on."""
    out.line(f"chatting with {session.model.name}: type a question, /help for commands, /quit to leave")
    if isinstance(session.memory, NoMemory):
        out.line(f"({session.memory.reason})")
    answered = 0
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if line.startswith("/") and not line.startswith("//"):
            name, _, arg = line[1:].partition(" ")
            if name in QUIT:
                break
            _command(session, name, arg.strip(), out)
            continue
        answered += _ask(session, line.removeprefix("/"), out)  # "//x" asks "/x"
    return answered


def _ask(session: ChatSession, question: str, out: Sink) -> int:
    try:
        turn = session.ask(question, out.stream)
    except KeyboardInterrupt:
        out.line()
        out.line("(stopped; nothing was logged)")
        return 0
    except (ValueError, LookupError, RuntimeError) as err:
        out.line(f"error: {err}")
        return 0
    out.line()
    notes = []
    if turn.sources:
        notes.append(f"{len(turn.sources)} memories used: /sources")
    if turn.dropped_turns:
        notes.append(f"{turn.dropped_turns} oldest turns left out to fit the context")
    if notes:
        out.line(f"({'; '.join(notes)})")
    return 1


def _command(session: ChatSession, name: str, arg: str, out: Sink) -> None:
    entry = COMMANDS.get(name)
    if entry is None:
        out.line(f"unknown command /{name}; /help lists them")
        return
    try:
        entry[0](session, arg, out)
    except MemoryUnavailable as err:
        out.line(str(err))
    except (ValueError, LookupError, RuntimeError) as err:
        out.line(f"error: {err}")


def _item(result: Any) -> str:
    """A memory item as a short reference."""
    if isinstance(result, dict) and result.get("id") is not None:
        return f"#{result['id']}"
    return "done"


def _teach(session: ChatSession, arg: str, out: Sink) -> None:
    out.line(f"taught {_item(session.teach(arg))}")


def _correct(session: ChatSession, arg: str, out: Sink) -> None:
    first, _, rest = arg.partition(" ")
    target = _memory_id(session, first) if rest.strip() else None
    result = session.correct(rest if target is not None else arg, target)
    if target is not None:
        out.line(f"memory item #{target} corrected")
        return
    memory = result["memory"]
    kept = f"kept in memory as {_item(memory)}" if isinstance(memory, dict) else f"not in memory: {memory}"
    out.line(f"answer corrected (exchange {result['exchange']}); {kept}")


def _memory_id(session: ChatSession, word: str) -> str | None:
    """``word`` as a memory item id: ``#12``, or an id that /sources showed in this session."""
    if word.startswith("#") and len(word) > 1:
        return word[1:]
    shown = {str(n.get("id")) for turn in session.turns for n in turn.sources}
    return word if word in shown else None


def _remember(session: ChatSession, arg: str, out: Sink) -> None:
    out.line(f"remembered as {_item(session.remember())}")


def _forget(session: ChatSession, arg: str, out: Sink) -> None:
    session.forget(arg.removeprefix("#"))
    out.line(f"forgot #{arg.removeprefix('#')}")


def _rate(session: ChatSession, arg: str, out: Sink) -> None:
    if not arg.isdigit():
        raise ValueError("rate the last answer from 1 to 5: /rate 4")
    result = session.rate(int(arg))
    out.line(f"rated {result['rating']}/5 (exchange {result['exchange']})")


def _sources(session: ChatSession, arg: str, out: Sink) -> None:
    sources = session.sources()
    if not sources:
        out.line("the last answer used no memories")
    for n in sources:
        score = f" score {n['score']:.3f}" if isinstance(n.get("score"), int | float) else ""
        source = f" (source: {n['source']})" if n.get("source") else ""
        out.line(f"#{n.get('id')}{score}: {n.get('text', '')}{source}")


def _status(session: ChatSession, arg: str, out: Sink) -> None:
    for key, value in session.status().items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        out.line(f"{key}: {value}")


def _reset(session: ChatSession, arg: str, out: Sink) -> None:
    session.reset()
    out.line("the conversation starts afresh (memory and log kept)")


def _help(session: ChatSession, arg: str, out: Sink) -> None:
    for name, (_, usage) in COMMANDS.items():
        out.line(f"  /{name}{usage}")
    out.line(f"  /{' /'.join(QUIT)}  leave (so does Ctrl-D)")


COMMANDS: dict[str, tuple[Handler, str]] = {
    "teach": (_teach, " TEXT  teach the memory a fact"),
    "correct": (
        _correct,
        " [ID] NEW  correct the last answer (it becomes training data), or memory item #ID",
    ),
    "remember": (_remember, "  keep the last question and answer in memory"),
    "forget": (_forget, " ID  forget a memory item"),
    "rate": (_rate, " N  rate the last answer 1-5 (4 and 5 become training data)"),
    "sources": (_sources, "  the memories the last answer was given"),
    "status": (_status, "  model, session, context budget, memory"),
    "reset": (_reset, "  start the conversation afresh"),
    "help": (_help, "  this list"),
}
