"""Serving models over an OpenAI-compatible API: what ``ftf serve``'s routes call.

:func:`open_server` loads a base model once with the LoRA adapters of the chosen runs on top and
returns a :class:`ModelServer`: the served model names (the base's, and each run's id), chat
answers streamed or whole through the continuously batching :class:`~finetuneflow.api.scheduler.Scheduler`,
and optional memories per request through the same :class:`MemoryPort` seam and prompt fitting
(:func:`~finetuneflow.models.context.fit_prompt`) that ``ftf chat`` uses.

Raises (every function here): ``LookupError`` for an unknown project or run, ``UnknownModel`` (one)
for a model this server does not serve;
``RequestRejected`` for a request that cannot be answered as asked (the field at fault named);
``MemoryUnavailable`` for a request that asks for memories in a server without them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from finetuneflow.api.memory_port import MemoryPort, NoMemory, memory_port
from finetuneflow.api.runs import latest_run, require_kind, run_dir
from finetuneflow.api.scheduler import Answer, Job, Scheduler, Visible
from finetuneflow.config import setting
from finetuneflow.errors import ConfigError, RequestRejected
from finetuneflow.models.batching import Row
from finetuneflow.models.context import fit_prompt
from finetuneflow.models.generate import Sampling
from finetuneflow.records import Message
from finetuneflow.state import runs as rf

ROLES = ("system", "developer", "user", "assistant")  # developer: OpenAI's newer name for system


class UnknownModel(LookupError):
    """A request names a model this server does not serve (the server answers 404 with the names)."""


@dataclass
class ServingSettings:
    """How the served models answer: where they run, how many requests decode together, and the
    limits a request must keep."""

    device: str = setting("auto", "Where the models run: auto, cpu, cuda or mps.")
    batch_size: int = setting(8, "Requests decoded together (continuous batching); more wait in a queue.")
    max_prompt_tokens: int = setting(
        0,
        "Longest prompt in tokens, template included; the model's context minus max_tokens caps it "
        "either way (0 = that cap alone).",
    )
    max_tokens: int = setting(1024, "Most new tokens a request may ask for (its max_tokens).")
    default_max_tokens: int = setting(
        256, "New tokens of an answer whose request gives no max_tokens (at most max_tokens)."
    )
    memories: int = setting(5, "Memories recalled into the prompt of a request that asks for memory.")
    memory_share: float = setting(0.5, "Share of the prompt's free room memories may fill.")

    def problems(self) -> list[str]:
        keys = ("batch_size", "max_tokens", "default_max_tokens")
        out = [f"{k}: must be >= 1" for k in keys if getattr(self, k) < 1]
        if self.max_prompt_tokens < 0:
            out.append("max_prompt_tokens: must be >= 0 (0 = the model's context)")
        if self.memories < 0:
            out.append("memories: must be >= 0")
        if not 0 <= self.memory_share <= 1:
            out.append("memory_share: must be in [0, 1]")
        return out


@dataclass
class ChatRequest:
    """One chat completion request, as the server understood it."""

    model: str
    messages: list[Message]
    max_tokens: int | None = None  # None = the settings' default
    temperature: float = 1.0  # OpenAI's default; 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    memory: bool = False  # recall memories for the last question into the system prompt


@dataclass
class Served:
    """A loaded base model with the adapters of the served runs: name -> adapter (None = the base)."""

    model: Any
    tokenizer: Any
    adapters: dict[str, str | None]
    runs: dict[str, str]  # served name -> run id (runs only)
    pad_id: int
    created: int = field(default_factory=lambda: int(time.time()))
    lock: Any = field(default_factory=threading.Lock)  # the tokenizer's: request threads and the scheduler

    @contextmanager
    def activate(self, name: str) -> Iterator[Any]:
        """The model answering as ``name``: its run's adapter on, or every adapter off for the base."""
        adapter = self.adapters[name]
        if adapter is not None:
            self.model.set_adapter(adapter)
            yield self.model
        elif any(self.adapters.values()):
            with self.model.disable_adapter():
                yield self.model
        else:
            yield self.model


def served_name(base: str) -> str:
    """The name the base model is served under: as named, or a folder's name."""
    return Path(base).name if "/" in base or "\\" in base else base


def load_served(
    project: str, runs: Sequence[str] = (), base: str | None = None, device: str = "auto"
) -> Served:
    """The base model with every run's LoRA adapter loaded (without runs or base: the newest run).

    Raises:
        LookupError: no such project or run.
        ValueError: a run without a LoRA adapter, or runs of different base models.
    """
    from finetuneflow.hardware import pick_device
    from finetuneflow.models.chat import pad_id
    from finetuneflow.models.load import load_causal_lm, load_tokenizer
    from finetuneflow.models.resolve import resolve_model

    run_ids = list(runs) or ([] if base else [latest_run(project)])
    folders = [run_dir(project, r) for r in run_ids]
    configs = []
    for folder in folders:
        require_kind(folder, rf.CAUSAL, "serve")
        if not (folder / rf.ADAPTER / "adapter_config.json").exists():
            raise ValueError(
                f"run {folder.name!r} has no LoRA adapter (full fine-tuning): it cannot be served"
            )
        configs.append(json.loads((folder / rf.CONFIG).read_text()))
    # compared resolved: a run may name its base through a link (``$FTF_HOME/models/<name>``)
    bases = {Path(c["model_dir"]).resolve() for c in configs}
    if base:
        bases.add(resolve_model(base).resolve())
    if len(bases) != 1:
        raise ValueError(f"the served runs must share one base model, not {sorted(bases)}")
    base_dir = bases.pop()
    model = load_causal_lm(base_dir, pick_device(device)).eval()
    tokenizer = load_tokenizer(folders[0] / rf.ADAPTER if folders else base_dir)
    adapters: dict[str, str | None] = {served_name(base or configs[0]["train"]["base_model"]): None}
    if folders:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(folders[0] / rf.ADAPTER), adapter_name="run0")
        for i, folder in enumerate(folders[1:], start=1):
            model.load_adapter(str(folder / rf.ADAPTER), adapter_name=f"run{i}")
        model.eval()
        adapters |= {run_id: f"run{i}" for i, run_id in enumerate(run_ids)}
    return Served(model, tokenizer, adapters, {r: r for r in run_ids}, pad_id(tokenizer))


class ModelServer:
    """Served models answering chat requests (see the module docstring). ``close`` stops its thread."""

    def __init__(
        self,
        served: Served,
        settings: ServingSettings | None = None,
        memory: MemoryPort | None = None,
        embedder: Any = None,
    ) -> None:
        from finetuneflow.models.generate import context_window

        self.served = served
        self.settings = settings or ServingSettings()
        if problems := self.settings.problems():
            raise ConfigError(problems, "serving settings")
        self.memory: MemoryPort = memory or NoMemory("memory is not installed in this build")
        self.window = context_window(served.model, served.tokenizer)
        self.embedder = embedder  # a models.embed.Embedder, or None: no /v1/embeddings
        self.scheduler = Scheduler(served, self.settings.batch_size)

    def models(self) -> list[dict[str, Any]]:
        """The served models, base first, then the runs and the embedder: ``id``, ``run`` (a run's
        id, else None), ``created``."""
        names = [*self.served.adapters, *([self.embedder.name] if self.embedder is not None else [])]
        return [{"id": n, "run": self.served.runs.get(n), "created": self.served.created} for n in names]

    def model(self, name: str) -> dict[str, Any]:
        """The served model ``name``, as :meth:`models` lists it. Raises LookupError if none is."""
        for served in self.models():
            if served["id"] == name:
                return served
        known = ", ".join(m["id"] for m in self.models())
        raise UnknownModel(f"the model {name!r} is not served here (served: {known})")

    def start(
        self,
        request: ChatRequest,
        on_text: Callable[[str], None],
        on_done: Callable[[Answer | BaseException], None],
    ) -> Job:
        """Queue ``request``; pieces of the answer go to ``on_text`` and the end (an :class:`Answer`
        or the error) to ``on_done``, from the scheduler's thread. Checks the request first, raising
        before anything is queued."""
        from jinja2 import TemplateError

        from finetuneflow.models.chat import end_of_turn_tokens
        from finetuneflow.models.generate import prompt_text

        if request.model not in self.served.adapters:
            known = ", ".join(self.served.adapters)
            raise UnknownModel(f"the model {request.model!r} is not served here (served: {known})")
        sampling = self._sampling(request)
        tok = self.served.tokenizer
        notes = self._recall(request)  # outside the lock: an embedder may take a while
        try:
            with self.served.lock:
                messages, sources = self._prompt(request, sampling.max_new_tokens, notes)
                ids = list(tok(prompt_text(tok, messages), add_special_tokens=False)["input_ids"])
        except TemplateError as err:  # e.g. Gemma's "System role not supported": the request's doing
            raise RequestRejected(
                f"messages: the model's chat template refused them: {err}", "messages", "invalid_messages"
            ) from err
        self._check_length(len(ids), sampling.max_new_tokens)
        stop_ids = frozenset(end_of_turn_tokens(tok).values())
        row = Row(ids, sampling.max_new_tokens, stop_ids, sampling.temperature, sampling.top_p, sampling.seed)
        job = Job(request.model, row, Visible(tok, request.stop, self.served.lock), on_text, on_done, sources)
        self.scheduler.submit(job)
        return job

    def embed(self, model: str, texts: list[str], dimensions: int | None = None) -> list[list[float]]:
        """Embeddings of ``texts`` (rows L2-normalised) by the served embedder named ``model``.
        ``dimensions``, if given, must be the embedder's size: none of ours is trained to be cut
        short (Matryoshka), so a shorter vector would be a worse one, given without a word."""
        if self.embedder is None:
            raise UnknownModel("no embedding model is served here (start `ftf serve` with --embedder)")
        if model != self.embedder.name:
            raise UnknownModel(
                f"the embedding model {model!r} is not served here (served: {self.embedder.name})"
            )
        if dimensions is not None and dimensions != self.embedder.dim:
            raise RequestRejected(
                f"dimensions: {model} gives {self.embedder.dim}-dimensional vectors and cannot shorten "
                f"them; send {self.embedder.dim} or leave dimensions out",
                "dimensions",
                "unsupported_value",
            )
        return [[float(x) for x in row] for row in self.embedder.embed(texts)]

    def cancel(self, job: Job) -> None:
        """Stop ``job``'s generation (its client went away)."""
        self.scheduler.cancel(job)

    def close(self) -> None:
        self.scheduler.close()

    def _sampling(self, request: ChatRequest) -> Sampling:
        cap = self.settings.max_tokens
        default = min(self.settings.default_max_tokens, cap)
        max_tokens = request.max_tokens if request.max_tokens is not None else default
        if max_tokens > cap:
            raise RequestRejected(
                f"max_tokens is {max_tokens}; this server allows at most {cap}", "max_tokens"
            )
        sampling = Sampling(max_tokens, request.temperature, request.top_p, request.seed)
        if problems := sampling.problems():
            field_name, _, problem = problems[0].partition(": ")
            param = {"max_new_tokens": "max_tokens"}.get(field_name, field_name)
            raise RequestRejected(f"{param}: {problem}", param)
        return sampling

    def _prompt_budget(self, max_tokens: int) -> int:
        """Prompt tokens allowed: the context less ``max_tokens``, and no more than
        ``max_prompt_tokens`` where that is set (it narrows the context's limit, never widens it)."""
        budget = self.window - max_tokens
        return min(budget, self.settings.max_prompt_tokens) if self.settings.max_prompt_tokens else budget

    def _check_length(self, tokens: int, max_tokens: int) -> None:
        budget = self._prompt_budget(max_tokens)
        if tokens > budget:
            raise RequestRejected(
                f"the prompt takes {tokens} tokens; this server allows {budget} with max_tokens {max_tokens} "
                f"(context {self.window}). Shorten the messages or lower max_tokens",
                "messages",
                "context_length_exceeded",
            )

    def _recall(self, request: ChatRequest) -> list[dict[str, Any]]:
        """The memories for the request's last message (none unless it asks for memory)."""
        if not request.memory or not request.messages:
            return []
        question = str(request.messages[-1].get("content", ""))
        return self.memory.recall(question, k=self.settings.memories) if self.settings.memories else []

    def _prompt(
        self, request: ChatRequest, max_tokens: int, notes: list[dict[str, Any]]
    ) -> tuple[list[Message], list[dict[str, Any]]]:
        """The messages the model reads, and the memories put into them."""
        messages = request.messages
        if not messages:
            raise RequestRejected("messages: give at least one message", "messages")
        for i, m in enumerate(messages):
            if m.get("role") not in ROLES:
                raise RequestRejected(
                    f"messages[{i}].role must be one of {', '.join(ROLES)}", f"messages[{i}].role"
                )
        messages = [{**m, "role": "system"} if m["role"] == "developer" else m for m in messages]
        if not request.memory:
            return messages, []
        return self._with_memory(messages, max_tokens, notes)

    def _with_memory(
        self, messages: list[Message], max_tokens: int, notes: list[dict[str, Any]]
    ) -> tuple[list[Message], list[dict[str, Any]]]:
        """The conversation refitted with memories for its last question in the system prompt, as
        ``ftf chat`` builds its prompts (oldest turns dropped first when over the budget)."""
        from finetuneflow.models.generate import count_prompt_tokens

        system = messages[0]["content"] if messages[0]["role"] == "system" else None
        rest = messages[1:] if system is not None else messages
        roles = [m["role"] for m in rest]
        if roles != ["user", "assistant"] * (len(rest) // 2) + ["user"]:
            raise RequestRejected(
                "with memory, messages must be an optional system message, then user and assistant turns "
                "in turn, ending with the user's question",
                "messages",
            )
        question = rest[-1]["content"]
        turns = [(rest[i]["content"], rest[i + 1]["content"]) for i in range(0, len(rest) - 1, 2)]
        count = partial(count_prompt_tokens, self.served.tokenizer)
        try:
            fitted = fit_prompt(
                count,
                self._prompt_budget(max_tokens),
                question,
                turns,
                notes,
                system,
                self.settings.memory_share,
            )
        except ValueError as err:
            raise RequestRejected(str(err), "messages", "context_length_exceeded") from err
        return fitted.messages, fitted.notes


def open_server(
    project: str,
    runs: Sequence[str] = (),
    base: str | None = None,
    settings: ServingSettings | None = None,
    *,
    embedder: str = "",
    memory: bool = True,
    port: MemoryPort | None = None,
) -> ModelServer:
    """Serve the base model ``base`` and/or the tuned models of ``runs`` (default: the newest run),
    the embedder ``embedder`` ('' = none; a ``models.embed.load_embedder`` spec) and the project's
    memory for requests that ask for it (``port`` replaces it; ``memory`` False switches it off)."""
    cfg = settings or ServingSettings()
    if problems := cfg.problems():
        raise ConfigError(problems, "serving settings")
    vectors = None
    if embedder:
        from finetuneflow.models.embed import load_embedder

        vectors = load_embedder(embedder)
    served = load_served(project, runs, base, cfg.device)
    return ModelServer(served, cfg, port or memory_port(project, memory), vectors)
